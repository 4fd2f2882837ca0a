out.o: a.c b.h \
  c\ d.h e\#f.h $$g.h
b.h:

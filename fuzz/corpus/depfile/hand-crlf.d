x.o y.o: C\:\\x.h
	z.h

m2.o: main.cc /usr/include/stdc-predef.h inc/sp\ ace.h inc/ha\#sh.h \
 inc/co:lon.h inc/dol$$lar.h

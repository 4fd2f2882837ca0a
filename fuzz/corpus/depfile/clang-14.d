m3.o: main.c inc/sp\ ace.h inc/ha\#sh.h inc/co:lon.h inc/dol$$lar.h

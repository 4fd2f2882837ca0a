#ifndef GREET_H
#define GREET_H
#define GREETING "Hello from a gvbuild-built program"
#endif

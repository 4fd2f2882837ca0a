/* A small shim in the spirit of Gevulot's shim-ffi: it finds the tasks in the workspace, calls
 * the program's callback for each, and writes what the callback returns as the task's result. */
#ifndef GEVULOT_SHIM_H
#define GEVULOT_SHIM_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Called once per task with its bytes; writes at most `out_len` bytes of result into `out` and
 * returns how many it wrote, or a negative number on failure. */
typedef long (*gevulot_task_fn)(const unsigned char *task, size_t task_len, char *out, size_t out_len, void *ctx);

/* Run `fn` for every `*.task` file in `workspace`, writing `NAME.result`. Returns the number of
 * tasks run, or -1 when the workspace cannot be read or a task fails. */
long gevulot_run(const char *workspace, gevulot_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif

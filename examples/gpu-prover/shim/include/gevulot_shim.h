/* A small shim in the spirit of Gevulot's shim-ffi, speaking the shim's file task protocol: it
 * reads the task from WORKSPACE/task.json, calls the program's callback for each of the task's
 * files, and writes WORKSPACE/task_result.json, which the runner (a Gevulot node's file-based
 * executor, or `gvbuild run`) reads after the VM stops. */
#ifndef GEVULOT_SHIM_H
#define GEVULOT_SHIM_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Called once per input file with its bytes; writes at most `out_len` bytes of result into `out`
 * and returns how many it wrote, or a negative number on failure. */
typedef long (*gevulot_task_fn)(const unsigned char *input, size_t input_len, char *out, size_t out_len, void *ctx);

/* Wait up to 30 s for WORKSPACE/task.json, run `fn` for each file the task lists (a relative
 * name is WORKSPACE/NAME), write each result to WORKSPACE/NAME.result, and write
 * WORKSPACE/task_result.json: {"Ok": {"id", "data": the results, "files": the .result files}},
 * or {"Err": "why"} when a file cannot be read or `fn` fails. Returns the number of files run
 * (an Ok result), -2 after writing an Err result, or -1 when no result could be written (no
 * task, or the workspace cannot be written). */
long gevulot_run(const char *workspace, gevulot_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif

// A deviceQuery-style prover: for each input file of the task (through the shim, which reads
// /workspace/task.json and writes /workspace/task_result.json), report the CUDA devices this VM
// sees and run a tiny kernel that sums the file's bytes on the GPU.
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>
#include "gevulot_shim.h"

__global__ void sum_bytes(const unsigned char *data, size_t n, unsigned long long *out) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) atomicAdd(out, (unsigned long long)data[i]);
}

static long prove(const unsigned char *task, size_t len, char *out, size_t out_len, void *) {
  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess) {
    return snprintf(out, out_len, "no CUDA device: %s\n", cudaGetErrorString(err));
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  unsigned char *d_data = nullptr;
  unsigned long long *d_sum = nullptr, sum = 0;
  cudaMalloc(&d_data, len ? len : 1);
  cudaMalloc(&d_sum, sizeof sum);
  cudaMemcpy(d_data, task, len, cudaMemcpyHostToDevice);
  cudaMemset(d_sum, 0, sizeof sum);
  sum_bytes<<<(unsigned)((len + 255) / 256), 256>>>(d_data, len, d_sum);
  cudaMemcpy(&sum, d_sum, sizeof sum, cudaMemcpyDeviceToHost);
  cudaFree(d_data);
  cudaFree(d_sum);
  return snprintf(out, out_len, "%d device(s); %s, compute %d.%d; byte sum %llu\n", devices, prop.name,
                  prop.major, prop.minor, sum);
}

int main(int argc, char **argv) {
  const char *workspace = argc > 1 ? argv[1] : "/workspace";
  long n = gevulot_run(workspace, prove, nullptr);
  if (n == -1) {
    // No result could be written. Under reboot_on_exit this non-zero exit resets the VM.
    fprintf(stderr, "prover: no task or no result in %s\n", workspace);
    return 1;
  }
  // The result (Ok or Err) is written: the task is answered, so the VM powers off.
  printf("prover: %s\n", n >= 0 ? "proved the task's files" : "the task failed; the result says why");
  return 0;
}

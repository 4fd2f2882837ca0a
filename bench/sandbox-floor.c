/* The floor of a per-step mount-namespace sandbox on this machine, for bench/sandbox.sh.
 *
 * The same step as the generated graphs' (`sh -c 'cat in.txt | cksum > out/o.txt'`) is run N
 * times plainly and N times in the least a sandbox with an overlay can be, interleaved:
 *   - before the step: the overlay's upper layer, its output folder, the work folder and a
 *     TMPDIR folder made in a tmpfs (the "area") of a namespace prepared once;
 *   - the child: setns into that namespace, unshare(CLONE_NEWNS), mount an overlay of a plain
 *     folder (the lower layer, standing in for the view) over the project, bind its TMPDIR
 *     folder, chdir, exec;
 *   - after: the namespace torn down (the last reference to it dropped), the output copied out
 *     of the upper layer, the area's folders removed.
 * No view is served, listed or checked: what gvbuild adds beyond this is the cost of its view.
 *
 *   cc -O2 -o floor bench/sandbox-floor.c && ./floor DIR N
 *
 * DIR: an empty scratch folder (made inside it: lower/, proj/, area/, tmp/, plain/); must be
 * run as root (mount namespaces without a user namespace). Prints one line:
 *   plain_us sandboxed_us   (mean wall microseconds per step)
 * Exit status 1 with a message on stderr when a call fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char stack[1 << 16];
static const char *dir;
static int sandboxed, base_fd = -1;
static char overlay_opts[1024], project[512], area_tmp[512], tmp_at[512], plain[512];

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void die(const char *what) {
  fprintf(stderr, "sandbox-floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void path(char *out, const char *fmt, const char *a, long b) {
  snprintf(out, 512, fmt, a, b);
}

/* The step's process: the sandbox's setup (as gvbuild's child does it), then the command. */
static int child(void *arg) {
  (void)arg;
  if (sandboxed) {
    if (setns(base_fd, CLONE_NEWNS)) _exit(91);
    if (unshare(CLONE_NEWNS)) _exit(92);
    if (mount("overlay", project, "overlay", MS_NOSUID | MS_NODEV, overlay_opts)) _exit(93);
    if (mount(area_tmp, tmp_at, NULL, MS_BIND, NULL)) _exit(94);
  }
  if (chdir(sandboxed ? project : plain)) _exit(95);
  execl("/bin/sh", "sh", "-c", "cat in.txt | cksum > out/o.txt", (char *)NULL);
  _exit(96);
}

static void write_file(const char *p, const char *text) {
  int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || write(fd, text, strlen(text)) < 0 || close(fd)) die(p);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DIR N\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  long n = atol(argv[2]);
  if (strlen(dir) > 300 || n < 1) {
    fprintf(stderr, "sandbox-floor: DIR must be at most 300 bytes long, N at least 1\n");
    return 2;
  }
  char p[512], q[512];
  const char *made[] = {"lower", "lower/out", "proj", "area", "tmp", "plain", "plain/out"};
  for (size_t i = 0; i < sizeof made / sizeof *made; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, made[i]);
    if (mkdir(p, 0755) && errno != EEXIST) die(p);
  }
  snprintf(p, sizeof p, "%s/lower/in.txt", dir);
  write_file(p, "an input of the step\n");
  snprintf(p, sizeof p, "%s/plain/in.txt", dir);
  write_file(p, "an input of the step\n");
  snprintf(project, sizeof project, "%s/proj", dir);
  snprintf(tmp_at, sizeof tmp_at, "%s/tmp", dir);
  snprintf(plain, sizeof plain, "%s/plain", dir);

  /* The namespace prepared once: every mount private, a tmpfs at area/. A helper process holds
     it; the folders in it are reached through /proc/PID/root. */
  int hold[2];
  if (pipe(hold)) die("pipe");
  pid_t holder = fork();
  if (holder < 0) die("fork");
  if (holder == 0) {
    close(hold[1]);
    snprintf(p, sizeof p, "%s/area", dir);
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, NULL))
      _exit(1);
    char c;
    (void)!read(hold[0], &c, 1);
    _exit(0);
  }
  close(hold[0]);
  char area[512];
  snprintf(area, sizeof area, "/proc/%d/root%s/area", (int)holder, dir);
  for (int tries = 0;; tries++) {
    /* Ready once its area is a tmpfs of its own. */
    struct stat a, d;
    snprintf(q, sizeof q, "%s/..", area);
    if (stat(area, &a) == 0 && stat(q, &d) == 0 && a.st_dev != d.st_dev) break;
    if (tries > 1000) die("the prepared namespace");
    usleep(1000);
  }
  snprintf(p, sizeof p, "/proc/%d/ns/mnt", (int)holder);
  base_fd = open(p, O_RDONLY | O_CLOEXEC);
  if (base_fd < 0) die(p);

  double total[2] = {0, 0};
  for (long i = 0; i < n; i++) {
    for (sandboxed = 0; sandboxed < 2; sandboxed++) {
      char upper[512], work[512], tmpdir[512];
      double start = now_us();
      if (sandboxed) {
        path(upper, "%s/u%ld", area, i);
        path(work, "%s/w%ld", area, i);
        path(tmpdir, "%s/t%ld", area, i);
        snprintf(p, sizeof p, "%s/out", upper);
        if (mkdir(upper, 0755) || mkdir(p, 0755) || mkdir(work, 0755) || mkdir(tmpdir, 0755))
          die("the area's folders");
        snprintf(overlay_opts, sizeof overlay_opts,
                 "lowerdir=%s/lower,upperdir=%s/area/u%ld,workdir=%s/area/w%ld", dir, dir, i, dir, i);
        snprintf(area_tmp, sizeof area_tmp, "%s/area/t%ld", dir, i);
      } else {
        snprintf(p, sizeof p, "%s/out/o.txt", plain);
        unlink(p);
      }
      sigset_t all, old;
      sigfillset(&all);
      sigprocmask(SIG_SETMASK, &all, &old);
      pid_t pid = clone(child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
      sigprocmask(SIG_SETMASK, &old, NULL);
      if (pid < 0) die("clone");
      /* Held past the step, as gvbuild holds it; closing it tears the namespace down. */
      int ns = -1;
      if (sandboxed) {
        snprintf(p, sizeof p, "/proc/%d/ns/mnt", (int)pid);
        ns = open(p, O_RDONLY | O_CLOEXEC);
      }
      int status;
      if (waitpid(pid, &status, 0) != pid) die("waitpid");
      if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "sandbox-floor: the step failed (status %d)\n", WEXITSTATUS(status));
        return 1;
      }
      if (sandboxed) {
        if (ns >= 0) close(ns);
        /* The output copied out of the upper layer (to a new file, as gvbuild copies one). */
        char buf[4096];
        snprintf(p, sizeof p, "%s/out/o.txt", upper);
        snprintf(q, sizeof q, "%s/out/copied.txt", plain);
        unlink(q);
        int in = open(p, O_RDONLY | O_CLOEXEC), out = open(q, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (in < 0 || out < 0) die("the output's copy");
        ssize_t k;
        while ((k = read(in, buf, sizeof buf)) > 0)
          if (write(out, buf, (size_t)k) != k) die("the output's copy");
        close(in);
        close(out);
        if (unlink(p)) die(p);
        snprintf(p, sizeof p, "%s/out", upper);
        snprintf(q, sizeof q, "%s/work", work);
        if (rmdir(p) || rmdir(upper) || rmdir(q) || rmdir(work) || rmdir(tmpdir)) die("the area's removal");
      }
      total[sandboxed] += now_us() - start;
    }
  }
  close(hold[1]);
  waitpid(holder, NULL, 0);
  printf("%.0f %.0f\n", total[0] / n, total[1] / n);
  return 0;
}

/* The floor under the hub's per-byte cost: a middle process that only moves bytes over loopback
 * TCP, as the hub does per task (producer -> relay -> worker -> relay -> producer, N bytes each
 * hop), with blocking reads and writes and no framing, parsing or copies of its own. Prints the
 * relay's CPU (user + system) per round trip. Usage: relay N ROUNDS [PIPELINE]
 * PIPELINE messages are kept in flight (default 1), as `taskhub bench` keeps 512; PIPELINE x N
 * must fit in the loopback socket buffers (a few MiB), or the relay, which reads the worker's
 * answers only after PIPELINE sends, stalls. Build: cc -O2 -o relay relay.c -lpthread */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

static size_t N; static long ROUNDS, PIPE;

static void xfer(int fd, char *buf, size_t n, int out) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = out ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
    if (r <= 0) { perror(out ? "write" : "read"); exit(1); }
    done += (size_t)r;
  }
}

static void pair(int *a, int *b) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  bind(l, (struct sockaddr *)&sa, sizeof sa); listen(l, 1);
  getsockname(l, (struct sockaddr *)&sa, &len);
  *b = socket(AF_INET, SOCK_STREAM, 0);
  connect(*b, (struct sockaddr *)&sa, sizeof sa);
  *a = accept(l, NULL, NULL); close(l);
  int one = 1;
  setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int worker_fd;
static void *worker(void *arg) {
  (void)arg; char *buf = malloc(N);
  for (long i = 0; i < ROUNDS; i++) { xfer(worker_fd, buf, N, 0); xfer(worker_fd, buf, N, 1); }
  return NULL;
}
static int prod_fd;
static void *producer_send(void *arg) {
  (void)arg; char *buf = calloc(1, N);
  for (long i = 0; i < ROUNDS; i++) xfer(prod_fd, buf, N, 1);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: relay N ROUNDS [PIPELINE]\n"); return 2; }
  N = strtoul(argv[1], 0, 10); ROUNDS = strtol(argv[2], 0, 10); PIPE = argc > 3 ? strtol(argv[3], 0, 10) : 1;
  int prod_side, relay_prod, work_side, relay_work;
  pair(&relay_prod, &prod_side); pair(&relay_work, &work_side);
  pid_t pid = fork();
  if (pid == 0) {
    close(prod_side); close(work_side);
    char *up = malloc(N), *down = malloc(N);
    struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
    for (long i = 0; i < ROUNDS; i++) {
      xfer(relay_prod, up, N, 0); xfer(relay_work, up, N, 1);
      if (i + 1 >= PIPE || i + 1 == ROUNDS) { xfer(relay_work, down, N, 0); xfer(relay_prod, down, N, 1); }
    }
    for (long i = ROUNDS - PIPE + 1; i < ROUNDS && PIPE > 1; i++) { xfer(relay_work, down, N, 0); xfer(relay_prod, down, N, 1); }
    getrusage(RUSAGE_SELF, &r1);
    double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6
               + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("%zu bytes, %ld in flight: relay CPU per round trip %.2f us\n", N, PIPE, cpu / ROUNDS * 1e6);
    return 0;
  }
  close(relay_prod); close(relay_work);
  pthread_t w, p; worker_fd = work_side; prod_fd = prod_side;
  pthread_create(&w, 0, worker, 0); pthread_create(&p, 0, producer_send, 0);
  char *back = malloc(N);
  for (long i = 0; i < ROUNDS; i++) xfer(prod_side, back, N, 0);
  pthread_join(p, 0); pthread_join(w, 0);
  waitpid(pid, 0, 0);
  return 0;
}

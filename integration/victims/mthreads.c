/*
 * mthreads: a process with several threads, each keeping its own state.
 *
 * usage: mthreads [workers=4]
 *
 * Worker i keeps a tick counter, a __thread (TLS) value derived from i,
 * its TID (checked against gettid() every tick) and a heap buffer of
 * (i+1)*64 KiB whose content is a pure function of (i, tick): verified,
 * then rewritten for the next tick. Every tick it also bumps its slot in a
 * mutex-protected table and the table's total; the main thread checks
 * under the lock that the slots add up to the total. Two more threads play
 * ping-pong through a condition variable (they sit in futex waits most of
 * the time), counting strokes that must alternate between them.
 *
 * Output:  mthreads pid=<pid> workers=<N>
 *          worker <i> tid=<tid> tick <n> tls=<hex>    (every 100 ms)
 *          main pid=<pid> tick <n> total=<sum>        (every 100 ms)
 *          pingpong <strokes>                         (every 10 strokes)
 */
#include "victim.h"

#include <pthread.h>
#include <sys/syscall.h>

#define MAXW 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t slots[MAXW], total;

static __thread uint64_t tls_value;
static __thread long tls_index = -1;

static pthread_mutex_t pp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_cond = PTHREAD_COND_INITIALIZER;
static int pp_turn;
static uint64_t pp_strokes;

static inline uint64_t tls_for(long i)
{
	return 0x7115000000000000ull ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);
}

static inline uint64_t pattern(long i, uint64_t word, uint64_t tick)
{
	uint64_t x = word * 0xD1B54A32D192ED03ull + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull + tick;

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	return x ^ (x >> 32);
}

static void *worker(void *arg)
{
	long i = (long)arg;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	size_t words = (size_t)(i + 1) * 64 * 1024 / 8;
	uint64_t *heap = malloc(words * 8);

	if (!heap)
		fail("worker %ld malloc", i);
	tls_index = i;
	tls_value = tls_for(i);
	for (size_t w = 0; w < words; w++)
		heap[w] = pattern(i, w, 0);
	for (uint64_t n = 0;; n++) {
		if (tls_index != i || tls_value != tls_for(i))
			fail("worker %ld tls index=%ld value=%016lx want %016lx", i, tls_index,
			     (unsigned long)tls_value, (unsigned long)tls_for(i));
		if ((pid_t)syscall(SYS_gettid) != tid)
			fail("worker %ld gettid=%ld want %d", i, (long)syscall(SYS_gettid), tid);
		for (size_t w = 0; w < words; w++)
			if (heap[w] != pattern(i, w, n))
				fail("worker %ld tick=%lu heap word=%zu got=%016lx want=%016lx", i, (unsigned long)n, w,
				     (unsigned long)heap[w], (unsigned long)pattern(i, w, n));
		for (size_t w = 0; w < words; w++)
			heap[w] = pattern(i, w, n + 1);
		pthread_mutex_lock(&lock);
		slots[i]++;
		total++;
		pthread_mutex_unlock(&lock);
		say("worker %ld tid=%d tick %lu tls=%016lx", i, tid, (unsigned long)n, (unsigned long)tls_value);
		sleep_ms(100);
	}
	return NULL;
}

/* Player me (0 or 1) waits for its turn, strokes, and passes the turn. */
static void *player(void *arg)
{
	int me = (int)(long)arg;

	for (;;) {
		pthread_mutex_lock(&pp_lock);
		while (pp_turn != me)
			pthread_cond_wait(&pp_cond, &pp_lock);
		if ((int)(pp_strokes % 2) != me)
			fail("pingpong stroke %lu by player %d", (unsigned long)pp_strokes, me);
		pp_strokes++;
		if (pp_strokes % 10 == 0)
			say("pingpong %lu", (unsigned long)pp_strokes);
		pp_turn = 1 - me;
		pthread_cond_broadcast(&pp_cond);
		pthread_mutex_unlock(&pp_lock);
		sleep_ms(7);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long workers = arg_long(argc, argv, 1, 4);
	pthread_t th;

	if (workers < 1 || workers > MAXW)
		fail("workers must be 1..%d", MAXW);
	say("mthreads pid=%d workers=%ld", getpid(), workers);
	for (long i = 0; i < workers; i++)
		if (pthread_create(&th, NULL, worker, (void *)i))
			fail("pthread_create worker %ld", i);
	for (long p = 0; p < 2; p++)
		if (pthread_create(&th, NULL, player, (void *)p))
			fail("pthread_create player %ld", p);
	for (uint64_t n = 0;; n++) {
		uint64_t sum = 0, tot;

		pthread_mutex_lock(&lock);
		for (long i = 0; i < workers; i++)
			sum += slots[i];
		tot = total;
		pthread_mutex_unlock(&lock);
		if (sum != tot)
			fail("main slots add up to %lu, total %lu", (unsigned long)sum, (unsigned long)tot);
		say("main pid=%d tick %lu total=%lu", getpid(), (unsigned long)n, (unsigned long)tot);
		sleep_ms(100);
	}
}

/*
 * threads: a process with a second thread, which lazyr refuses to dump.
 * After the refused dump it must keep running exactly as before.
 *
 * Output:  threads ready pid=<pid> tid=<second thread's tid>
 *          tick <n> pid=<pid>     (every 100 ms, from the main thread)
 */
#include "victim.h"

#include <pthread.h>
#include <sys/syscall.h>

static volatile pid_t second_tid;

static void *second(void *arg)
{
	(void)arg;
	second_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		sleep_ms(50);
	return NULL;
}

int main(void)
{
	pthread_t th;
	int err = pthread_create(&th, NULL, second, NULL);

	if (err)
		fail("pthread_create: %s", strerror(err));
	while (second_tid == 0)
		sleep_ms(1);
	say("threads ready pid=%d tid=%d", getpid(), (int)second_tid);
	for (unsigned long n = 0;; n++) {
		say("tick %lu pid=%d", n, getpid());
		sleep_ms(100);
	}
}

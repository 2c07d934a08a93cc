/* A stand-in for a lazily restored process. It maps NPAGES of private
 * anonymous memory and creates a userfaultfd, prints
 * "READY <addr hex> <uffd fd>" and waits for a line on stdin. Meanwhile the
 * test pulls the uffd out with pidfd_getfd, registers the region and hands
 * it to the daemon, as restore does. The victim then closes its own copy of
 * the uffd and reads its memory, printing FNV-1a-style hashes over the
 * 64-bit words read so the test can compare them with the expected content.
 *
 * usage: victim NPAGES MODE [ARGS]
 *   read               hash everything: "SUM <hex>"
 *   fork               hash the first half ("HALF <hex>"), fork; the child
 *                      hashes everything ("CHILD <hex>"), then the parent
 *                      does ("PARENT <hex>")
 *   forkslow USEC      read page 0, fork; the child prints "CPID <pid>" and
 *                      then reads like slow; the parent waits for it
 *   forkexit USEC      like forkslow, but the parent exits at once (the
 *                      child is reparented, as after a daemon's fork)
 *   mremap             move the region elsewhere ("MOVED <addr hex>"), hash
 *   dontneed F N       hash the first half, madvise(DONTNEED) pages
 *                      [F, F+N), hash everything
 *   munmap F N         munmap pages [F, F+N), hash the rest
 *   slow USEC          print "P <i> <first word hex>" per page, USEC apart
 *   wait               wait for a second line, then hash
 *   touch DIR          read one word per page, up ("seq") or down ("rev"),
 *                      and print "SUM" of those words (a benchmark's reader:
 *                      it outruns any copy and so keeps faulting)
 *   threads N          N threads hash everything at once; "SUM" of each,
 *                      in thread order
 *   dropping K         for every K pages: MADV_DONTNEED the first K/2,
 *                      check they read zero at once; then "BAD <nonzero
 *                      words seen>" and "SUM" of everything (the dropped
 *                      pages as zeros)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL

#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t hash_range(const unsigned char *p, size_t len, uint64_t h)
{
	const volatile uint64_t *w = (const volatile uint64_t *)p;
	for (size_t i = 0; i < len / 8; i++) {
		h ^= w[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}


struct reader {
	pthread_t t;
	const unsigned char *p;
	size_t size;
	uint64_t h;
};

static void *read_all(void *arg)
{
	struct reader *r = arg;
	r->h = hash_range(r->p, r->size, FNV_INIT);
	return NULL;
}

static void wait_line(void)
{
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		exit(5);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	size_t npages = strtoul(argv[1], NULL, 0), size = npages * PAGE;
	const char *mode = argv[2];
	unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 3;
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		perror("userfaultfd");
		return 4;
	}
	printf("READY %lx %d\n", (unsigned long)p, uffd);
	fflush(stdout);
	wait_line();
	close(uffd); /* as restore does: only the daemon's copies remain */

	if (!strcmp(mode, "read")) {
		printf("SUM %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else if (!strcmp(mode, "fork")) {
		printf("HALF %016llx\n", (unsigned long long)hash_range(p, size / 2, FNV_INIT));
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0)
			return 6;
		if (pid == 0) {
			printf("CHILD %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
			return 0;
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 7;
		printf("PARENT %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else if (!strcmp(mode, "mremap")) {
		void *dst = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (dst == MAP_FAILED)
			return 8;
		void *q = mremap(p, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
		if (q != dst) {
			perror("mremap");
			return 9;
		}
		printf("MOVED %lx\n", (unsigned long)q);
		printf("SUM %016llx\n", (unsigned long long)hash_range(q, size, FNV_INIT));
	} else if (!strcmp(mode, "dontneed") && argc == 5) {
		size_t f = strtoul(argv[3], NULL, 0), n = strtoul(argv[4], NULL, 0);
		printf("HALF %016llx\n", (unsigned long long)hash_range(p, size / 2, FNV_INIT));
		if (madvise(p + f * PAGE, n * PAGE, MADV_DONTNEED))
			return 10;
		printf("SUM %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else if (!strcmp(mode, "munmap") && argc == 5) {
		size_t f = strtoul(argv[3], NULL, 0), n = strtoul(argv[4], NULL, 0);
		if (munmap(p + f * PAGE, n * PAGE))
			return 11;
		uint64_t h = hash_range(p, f * PAGE, FNV_INIT);
		h = hash_range(p + (f + n) * PAGE, size - (f + n) * PAGE, h);
		printf("SUM %016llx\n", (unsigned long long)h);
	} else if ((!strcmp(mode, "forkslow") || !strcmp(mode, "forkexit")) && argc == 4) {
		useconds_t us = strtoul(argv[3], NULL, 0);
		printf("P 0 %016llx\n", (unsigned long long)*(volatile uint64_t *)p);
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0)
			return 6;
		if (pid == 0) {
			printf("CPID %d\n", getpid());
			for (size_t i = 1; i < npages; i++) {
				printf("P %zu %016llx\n", i, (unsigned long long)*(volatile uint64_t *)(p + i * PAGE));
				fflush(stdout);
				usleep(us);
			}
			return 0;
		}
		if (!strcmp(mode, "forkexit"))
			return 0;
		int st;
		waitpid(pid, &st, 0);
		printf("SUM 0\n");
	} else if (!strcmp(mode, "slow") && argc == 4) {
		useconds_t us = strtoul(argv[3], NULL, 0);
		for (size_t i = 0; i < npages; i++) {
			printf("P %zu %016llx\n", i, (unsigned long long)*(volatile uint64_t *)(p + i * PAGE));
			fflush(stdout);
			usleep(us);
		}
		printf("SUM %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else if (!strcmp(mode, "touch") && argc == 4) {
		int rev = !strcmp(argv[3], "rev");
		uint64_t h = FNV_INIT;
		for (size_t i = 0; i < npages; i++) {
			size_t pg = rev ? npages - 1 - i : i;
			h ^= *(volatile uint64_t *)(p + pg * PAGE + (pg % 512) * 8);
			h *= 0x100000001b3ULL;
		}
		printf("SUM %016llx\n", (unsigned long long)h);
	} else if (!strcmp(mode, "threads") && argc == 4) {
		int n = atoi(argv[3]);
		struct reader r[16];
		if (n < 1 || n > 16)
			return 2;
		for (int i = 0; i < n; i++) {
			r[i] = (struct reader){.p = p, .size = size};
			if (pthread_create(&r[i].t, NULL, read_all, &r[i]))
				return 12;
		}
		for (int i = 0; i < n; i++) {
			pthread_join(r[i].t, NULL);
			printf("SUM %016llx\n", (unsigned long long)r[i].h);
		}
	} else if (!strcmp(mode, "dropping") && argc == 4) {
		size_t k = strtoul(argv[3], NULL, 0);
		unsigned long bad = 0;
		if (k < 2)
			return 2;
		for (size_t f = 0; f + k <= npages; f += k) {
			unsigned char *q = p + f * PAGE;
			if (madvise(q, k / 2 * PAGE, MADV_DONTNEED))
				return 10;
			const volatile uint64_t *w = (const volatile uint64_t *)q;
			for (size_t i = 0; i < k / 2 * PAGE / 8; i++)
				bad += w[i] != 0;
		}
		printf("BAD %lu\n", bad);
		printf("SUM %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else if (!strcmp(mode, "wait")) {
		wait_line();
		printf("SUM %016llx\n", (unsigned long long)hash_range(p, size, FNV_INIT));
	} else {
		return 2;
	}
	return 0;
}

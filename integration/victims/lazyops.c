/*
 * lazyops: memory operations that meet lazily restored (still missing)
 * pages: fork, mremap, MADV_DONTNEED, munmap; or a slow reader.
 *
 * usage: lazyops ops  MiB TRIGGER
 *        lazyops slow MiB TRIGGER
 *
 * Maps MiB of anonymous memory (2 MiB aligned, so a daemon that serves an
 * aligned run around a fault never spills from one part into the next) and
 * writes a pattern into every word: word i of page p holds pattern(p, i),
 * with p relative to the area, so a moved page can be checked at its new
 * address. It prints "ready", then waits (1 ms polls) until the file
 * TRIGGER exists. The dump happens while it waits; the test
 * creates TRIGGER once the restore has returned, so everything below runs on
 * restored memory.
 *
 * ops: the area is cut into parts F, M, D, U (equal, whole 2 MiB blocks)
 * and R (the rest). Each line says how many pages of the part were resident
 * (mincore) right before the operation, so a test can tell that the
 * operation met missing pages.
 *   F  fork(); the child verifies F and overwrites its first half (copy on
 *      write), exits 0; the parent reaps it and verifies all of F (the
 *      child's writes must not show).        "fork ok resident=<n> pages=<n>"
 *   M  the first quarter of M is read, then M is mremap()ed to a reserved
 *      address and verified there with its original page indexes; the old
 *      range must be gone.                    "mremap ok resident=<n> ..."
 *   D  the first quarter of D is read, then MADV_DONTNEED on all of D: every
 *      word must read zero (dropped pages are never refilled from the
 *      images), and new writes stick.         "dontneed ok resident=<n> ..."
 *   U  the first quarter of U is read, then U is munmap()ed: it must be gone
 *      (mincore ENOMEM); a fresh mapping put at its place reads zero. Then R
 *      is verified.                           "munmap ok resident=<n> ..."
 *   Finally every remaining page (F, M at its new place, R) is verified once
 *   more, "done pages=<n>" is printed and the program exits 0.
 *
 * slow: reads (and verifies) the whole area in order, sleeping 1 ms every 16
 * pages (about 4 s for 256 MiB), "read <pages>" every 1024 pages, then
 * "done pages=<n>" and exit 0.
 *
 * Any wrong word prints "FAIL ..." and exits 1.
 */
#include "victim.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096ul
#define WPP (PAGE / 8)
#define ALIGN (2ul << 20)

static inline uint64_t pattern(uint64_t page, uint64_t word)
{
	uint64_t x = page * 0x9E3779B97F4A7C15ull + word * 0xD1B54A32D192ED03ull + 0x5eed;

	x ^= x >> 29;
	return x | 1; /* never zero: a zero page can never pass for data */
}

/* verify pages [first, first+n) of the area mapped at base (page index
 * relative to the area, whatever the address now is). */
static void verify(const char *what, const uint64_t *base, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++) {
		const uint64_t *w = base + (p - first) * WPP;

		for (uint64_t i = 0; i < WPP; i++)
			if (w[i] != pattern(p, i))
				fail("%s page=%lu word=%lu addr=%p got=%016lx want=%016lx", what,
				     (unsigned long)p, (unsigned long)i, (const void *)&w[i],
				     (unsigned long)w[i], (unsigned long)pattern(p, i));
	}
}

static void require_zero(const char *what, const uint64_t *base, uint64_t n)
{
	for (uint64_t j = 0; j < n * WPP; j++)
		if (base[j] != 0)
			fail("%s not zero: page=%lu word=%lu got=%016lx", what, (unsigned long)(j / WPP),
			     (unsigned long)(j % WPP), (unsigned long)base[j]);
}

/* Number of resident pages in [addr, addr+n pages). */
static uint64_t resident(const void *addr, uint64_t n)
{
	static unsigned char vec[1 << 16];
	uint64_t r = 0;

	if (n > sizeof(vec))
		fail("resident: %lu pages", (unsigned long)n);
	if (mincore((void *)addr, n * PAGE, vec) != 0)
		fail("mincore %p: %s", addr, strerror(errno));
	for (uint64_t i = 0; i < n; i++)
		r += vec[i] & 1;
	return r;
}

static void touch(const uint64_t *base, uint64_t n)
{
	volatile uint64_t sink = 0;

	for (uint64_t p = 0; p < n; p++)
		sink += base[p * WPP];
	(void)sink;
}

/* Map size bytes aligned to ALIGN. */
static uint64_t *map_aligned(uint64_t size)
{
	uint8_t *raw = mmap(NULL, size + ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (raw == MAP_FAILED)
		fail("mmap %lu: %s", (unsigned long)size, strerror(errno));
	uint8_t *a = (uint8_t *)(((uintptr_t)raw + ALIGN - 1) & ~(ALIGN - 1));
	if (a > raw)
		munmap(raw, a - raw);
	munmap(a + size, raw + ALIGN - a);
	return (uint64_t *)a;
}

static void run_ops(uint64_t *area, uint64_t pages)
{
	/* Parts of whole 2 MiB blocks: a fault is served with an aligned run
	 * around it, which must never reach into the next part. */
	uint64_t q = pages / 5 / (ALIGN / PAGE) * (ALIGN / PAGE);
	uint64_t *F = area, *M = area + q * WPP, *D = area + 2 * q * WPP, *U = area + 3 * q * WPP;
	uint64_t *R = area + 4 * q * WPP, nr = pages - 4 * q;
	uint64_t r;

	/* F: fork while F is missing; the child gets it through its own uffd. */
	r = resident(F, q);
	pid_t child = fork();
	if (child < 0)
		fail("fork: %s", strerror(errno));
	if (child == 0) {
		verify("fork child", F, 0, q);
		for (uint64_t j = 0; j < q / 2 * WPP; j++)
			F[j] = ~pattern(j / WPP, j % WPP);
		say("fork child pid=%d verified pages=%lu", getpid(), (unsigned long)q);
		_exit(0);
	}
	int st;
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			fail("waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("fork child status %#x", st);
	verify("fork parent", F, 0, q);
	say("fork ok resident=%lu pages=%lu", (unsigned long)r, (unsigned long)q);

	/* M: move it (partly faulted in) to a reserved place. */
	uint64_t *dst = map_aligned(q * PAGE);
	touch(M, q / 4);
	r = resident(M, q);
	uint64_t *moved = mremap(M, q * PAGE, q * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (moved != dst)
		fail("mremap %p -> %p: %s", (void *)M, (void *)dst, strerror(errno));
	verify("mremap", moved, q, q);
	unsigned char v;
	if (mincore(M, PAGE, &v) == 0 || errno != ENOMEM)
		fail("old range of mremap still mapped");
	say("mremap ok resident=%lu pages=%lu from=%p to=%p", (unsigned long)r, (unsigned long)q, (void *)M,
	    (void *)moved);

	/* D: drop it (partly faulted in): zeros, never the image's data. */
	touch(D, q / 4);
	r = resident(D, q);
	if (madvise(D, q * PAGE, MADV_DONTNEED) != 0)
		fail("madvise: %s", strerror(errno));
	require_zero("dontneed", D, q);
	for (uint64_t j = 0; j < q * WPP; j += 61)
		D[j] = j + 1;
	for (uint64_t j = 0; j < q * WPP; j++)
		if (D[j] != (j % 61 == 0 ? j + 1 : 0))
			fail("dontneed rewrite word=%lu got=%016lx", (unsigned long)j, (unsigned long)D[j]);
	say("dontneed ok resident=%lu pages=%lu", (unsigned long)r, (unsigned long)q);

	/* U: unmap it (partly faulted in); R must be unharmed. */
	touch(U, q / 4);
	r = resident(U, q);
	if (munmap(U, q * PAGE) != 0)
		fail("munmap: %s", strerror(errno));
	if (mincore(U, PAGE, &v) == 0 || errno != ENOMEM)
		fail("munmapped range still mapped");
	uint64_t *fresh = mmap(U, q * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			       -1, 0);
	if (fresh != U)
		fail("mmap at the unmapped place: %s", strerror(errno));
	require_zero("fresh mapping", fresh, q);
	verify("after munmap", R, 4 * q, nr);
	say("munmap ok resident=%lu pages=%lu", (unsigned long)r, (unsigned long)q);

	verify("final F", F, 0, q);
	verify("final M", moved, q, q);
	verify("final R", R, 4 * q, nr);
	say("done pages=%lu", (unsigned long)(2 * q + nr));
}

static void run_slow(const uint64_t *area, uint64_t pages)
{
	for (uint64_t p = 0; p < pages; p++) {
		verify("slow", area + p * WPP, p, 1);
		if ((p + 1) % 1024 == 0)
			say("read %lu", (unsigned long)(p + 1));
		if ((p + 1) % 16 == 0)
			sleep_ms(1);
	}
	say("done pages=%lu", (unsigned long)pages);
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "ops") && strcmp(argv[1], "slow")))
		fail("usage: lazyops ops|slow MiB TRIGGER");
	uint64_t mib = (uint64_t)arg_long(argc, argv, 2, 64);
	const char *trigger = argv[3];
	uint64_t pages = mib * (1024 * 1024 / PAGE);

	if (pages < 5 * (ALIGN / PAGE))
		fail("need at least 10 MiB");
	uint64_t *area = map_aligned(pages * PAGE);
	for (uint64_t p = 0; p < pages; p++)
		for (uint64_t i = 0; i < WPP; i++)
			area[p * WPP + i] = pattern(p, i);
	say("ready pid=%d mode=%s pages=%lu addr=%p", getpid(), argv[1], (unsigned long)pages, (void *)area);
	while (access(trigger, F_OK) != 0)
		usleep(1000);
	say("triggered resident=%lu", (unsigned long)resident(area, pages));
	if (strcmp(argv[1], "ops") == 0)
		run_ops(area, pages);
	else
		run_slow(area, pages);
	return 0;
}

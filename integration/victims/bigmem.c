/*
 * bigmem MiB TRIGGER: the benchmark victim.
 *
 * Fills MiB of anonymous memory with a pattern (one 64-bit word per page is
 * enough to prove the page arrived: word = page index * golden + seed), prints
 * "ready", then waits (1 ms polls) until the file TRIGGER exists. The dump
 * happens while it waits; the benchmark creates TRIGGER right before each
 * restore, holding the order to read in ("seq" or "rev"; one dump serves both).
 * It then reads one word of every page in that order,
 * checks it, prints "done start=<ns> end=<ns> pages=<n>" with CLOCK_REALTIME
 * times, and exits 0 (1 on a bad page).
 */
#include "victim.h"

#include <sys/mman.h>

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		fail("usage: bigmem MiB TRIGGER");
	size_t mib = strtoul(argv[1], NULL, 10);
	const char *trigger = argv[2];
	size_t size = mib << 20, pages = size / 4096;
	const uint64_t seed = 0x9e3779b97f4a7c15ull;

	uint64_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		fail("mmap %zu MiB", mib);
	/* Fill every word so every page is really present and dumped. */
	for (size_t p = 0; p < pages; p++) {
		uint64_t *w = mem + p * 512;
		for (int i = 0; i < 512; i++)
			w[i] = p * seed + i;
	}
	say("ready pages=%zu", pages);
	while (access(trigger, F_OK) != 0)
		usleep(1000);
	uint64_t start = realtime_ns();
	char order[8] = {0};
	FILE *f = fopen(trigger, "r");
	if (!f || !fgets(order, sizeof(order), f))
		fail("read trigger %s", trigger);
	fclose(f);
	int rev = strncmp(order, "rev", 3) == 0;
	size_t bad = 0;
	for (size_t i = 0; i < pages; i++) {
		size_t p = rev ? pages - 1 - i : i;
		if (mem[p * 512 + (p & 511)] != p * seed + (p & 511))
			bad++;
	}
	uint64_t end = realtime_ns();
	if (bad)
		fail("bad=%zu of %zu pages", bad, pages);
	say("done start=%llu end=%llu pages=%zu", (unsigned long long)start, (unsigned long long)end, pages);
	return 0;
}

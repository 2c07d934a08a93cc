/* A process whose memory a test serves through a userfaultfd it pulls out
 * with pidfd_getfd. It maps 4 pages, creates a userfaultfd, prints
 * "<addr hex> <uffd fd>" and waits for a line on stdin; by then the test
 * has done the handshake and registered the pages. Then, by argv[1]:
 *   read  - print the byte at page 0 offset 10
 *   fork  - fork; the child prints "child <byte at page 1>", the parent
 *           waits for it and prints "parent <byte at page 0>"
 *   exit  - just exit
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char line[16];
	unsigned char *p;
	int uffd;

	if (argc != 2)
		return 2;
	p = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 3;
	uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		return 4;
	printf("%lx %d\n", (unsigned long)p, uffd);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 5;
	close(uffd); /* only the test's copy remains */

	if (!strcmp(argv[1], "read")) {
		printf("%d\n", p[10]);
	} else if (!strcmp(argv[1], "fork")) {
		pid_t pid = fork();
		if (pid < 0)
			return 6;
		if (pid == 0) {
			printf("child %d\n", p[4096]);
			return 0;
		}
		waitpid(pid, NULL, 0);
		printf("parent %d\n", p[0]);
	}
	return 0;
}

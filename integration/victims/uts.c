/*
 * uts NAME: runs in a UTS namespace of its own (started with unshare -u), sets its host name to NAME and
 * its domain name to NAME.dom, then checks both every tick:
 *
 *   tick <n> host=<name> pid=<pid>
 *
 * A restore that loses the namespace (or puts the process into the host's) shows as "FAIL".
 */
#include "victim.h"

int main(int argc, char **argv)
{
	if (argc != 2)
		fail("usage: uts NAME");
	const char *name = argv[1];
	char dom[128];
	snprintf(dom, sizeof(dom), "%s.dom", name);
	if (sethostname(name, strlen(name)) || setdomainname(dom, strlen(dom)))
		fail("sethostname: %s", strerror(errno));
	for (unsigned long n = 1;; n++) {
		char host[128] = { 0 }, d[128] = { 0 };
		if (gethostname(host, sizeof(host) - 1) || getdomainname(d, sizeof(d) - 1))
			fail("gethostname: %s", strerror(errno));
		if (strcmp(host, name) || strcmp(d, dom))
			fail("host name %s domain %s, want %s %s", host, d, name, dom);
		say("tick %lu host=%s pid=%d", n, host, getpid());
		sleep_ms(100);
	}
}

/* Prints the userfaultfd ABI numbers from the system header, one
 * "name value" per line, so the Go test can compare them with the package's
 * own constants. */
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <sys/ioctl.h>

#define P(x) printf("%s %llu\n", #x, (unsigned long long)(x))

int main(void)
{
	P(UFFD_API);
	P(USERFAULTFD_IOC_NEW);
	P(UFFDIO_API);
	P(UFFDIO_REGISTER);
	P(UFFDIO_UNREGISTER);
	P(UFFDIO_WAKE);
	P(UFFDIO_COPY);
	P(UFFDIO_ZEROPAGE);
	P(UFFDIO_WRITEPROTECT);
	P(UFFDIO_CONTINUE);
	P(sizeof(struct uffd_msg));
	P(sizeof(struct uffdio_api));
	P(sizeof(struct uffdio_register));
	P(sizeof(struct uffdio_copy));
	P(sizeof(struct uffdio_zeropage));
	P(sizeof(struct uffdio_writeprotect));
	P(sizeof(struct uffdio_continue));
	P(UFFD_FEATURE_EVENT_FORK);
	P(UFFD_FEATURE_EVENT_REMAP);
	P(UFFD_FEATURE_EVENT_REMOVE);
	P(UFFD_FEATURE_EVENT_UNMAP);
	P(UFFD_FEATURE_SIGBUS);
	P(UFFD_FEATURE_THREAD_ID);
	P(UFFD_FEATURE_MINOR_SHMEM);
	P(UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	P(UFFD_EVENT_PAGEFAULT);
	P(UFFD_EVENT_UNMAP);
	P(UFFDIO_REGISTER_MODE_MINOR);
	P(UFFD_PAGEFAULT_FLAG_MINOR);
	return 0;
}

/*
 * The other doors to reboot(2) and kexec_load(2) on x86_64: the i386 entry (int $0x80,
 * seccomp arch AUDIT_ARCH_I386) and x32 numbers (__X32_SYSCALL_BIT).  Each call is one
 * the host would refuse differently (EPERM without CAP_SYS_BOOT, ENOSYS without x32),
 * so the printed results show which kernel answered.  Harmless on any kernel:
 * reboot(LINUX_REBOOT_CMD_CAD_OFF) and kexec_load with no segments.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAGIC1 0xfee1deadU
#define MAGIC2 672274793U
#define CAD_OFF 0U
#define X32 0x40000000L

static long int80(long nr, long a, long b, long c, long d)
{
	long ret;

	asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d) : "memory");
	return ret;
}

static long call(long nr, long a, long b, long c, long d)
{
	long ret = syscall(nr, a, b, c, d);

	return ret < 0 ? -errno : ret;
}

int main(void)
{
	printf("i386 reboot %ld\n", int80(88, MAGIC1, MAGIC2, CAD_OFF, 0));
	printf("i386 kexec_load %ld\n", int80(283, 0, 0, 0, 0));
	printf("x32 reboot %ld\n", call(X32 | 169, MAGIC1, MAGIC2, CAD_OFF, 0));
	printf("x32 kexec_load %ld\n", call(X32 | 528, 0, 0, 0, 0));
	printf("x86_64 reboot %ld\n", call(SYS_reboot, MAGIC1, MAGIC2, CAD_OFF, 0));
	return 0;
}

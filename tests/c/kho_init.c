/*
 * What the kernel's KHO selftest init (tools/testing/selftests/kho/init.c) does,
 * written for khofs: mount debugfs and proc, finalize KHO (6.16 hands over the
 * FDT whether or not it was finalized), read the command line, load a kernel
 * with kexec_file_load(KEXEC_FILE_NO_INITRAMFS), reboot(RB_KEXEC), and fall back
 * to reboot(RB_AUTOBOOT) on any error.  Raw system calls, no libc wrappers for
 * kexec, so only seccomp interception can bring them to the simulated kernel.
 *
 *   kho_init DIR IMAGE    mount at DIR/debugfs and DIR/proc, load IMAGE
 *   kho_init bench N IMAGE [INITRD]    N kexec_file_load calls, prints ns per call
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KEXEC_FILE_NO_INITRAMFS 0x4
#define COMMAND_LINE_SIZE 2048

static long kexec_file_load(int kernel_fd, int initrd_fd, unsigned long cmdline_len,
			    const char *cmdline, unsigned long flags)
{
	return syscall(SYS_kexec_file_load, kernel_fd, initrd_fd, cmdline_len, cmdline, flags);
}

static int fail(const char *what)
{
	fprintf(stderr, "kho_init: %s: %s\n", what, strerror(errno));
	return -1;
}

static int load(const char *dir, const char *image)
{
	char path[4096], cmdline[COMMAND_LINE_SIZE];
	ssize_t len;
	int fd, err;

	snprintf(path, sizeof(path), "%s/debugfs", dir);
	if (mount("debugfs", path, "debugfs", 0, NULL) < 0)
		return fail("mount debugfs");
	snprintf(path, sizeof(path), "%s/proc", dir);
	if (mount("proc", path, "proc", 0, NULL) < 0)
		return fail("mount proc");
	snprintf(path, sizeof(path), "%s/debugfs/kho/out/finalize", dir);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return fail(path);
	if (write(fd, "1", 1) != 1)
		return fail("finalize");
	close(fd);
	snprintf(path, sizeof(path), "%s/proc/cmdline", dir);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail(path);
	len = read(fd, cmdline, sizeof(cmdline));
	close(fd);
	if (len <= 0)
		return fail("read cmdline");
	cmdline[len - 1] = 0;		/* the newline */
	fd = open(image, O_RDONLY);
	if (fd < 0)
		return fail(image);
	err = kexec_file_load(fd, -1, len, cmdline, KEXEC_FILE_NO_INITRAMFS);
	close(fd);
	return err ? fail("kexec_file_load") : 0;
}

static int bench(long n, const char *image, const char *initrd)
{
	struct timespec t0, t1;
	int fd = open(image, O_RDONLY), initrd_fd = initrd ? open(initrd, O_RDONLY) : -1;

	if (fd < 0 || (initrd && initrd_fd < 0))
		return fail("open");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++)
		if (kexec_file_load(fd, initrd_fd, 0, NULL, initrd ? 0 : KEXEC_FILE_NO_INITRAMFS))
			return fail("kexec_file_load");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%ld\n", ((t1.tv_sec - t0.tv_sec) * 1000000000L + t1.tv_nsec - t0.tv_nsec) / n);
	return 0;
}

int main(int argc, char *argv[])
{
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "bench"))
		return bench(atol(argv[2]), argv[3], argc == 5 ? argv[4] : NULL) ? 1 : 0;
	if (argc != 3) {
		fprintf(stderr, "usage: kho_init DIR IMAGE | kho_init bench N IMAGE [INITRD]\n");
		return 2;
	}
	if (load(argv[1], argv[2]))
		goto err_reboot;
	if (reboot(RB_KEXEC))
		goto err_reboot;
	return 0;
err_reboot:
	reboot(RB_AUTOBOOT);
	return -1;
}

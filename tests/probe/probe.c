/* probe: a small static program run inside a slate container by the runtime's tests. It
 * reports what it sees as key=value lines on stdout, or loads the machine on request:
 *   probe            report (pid, hostname, ids, cwd, caps, seccomp, mounts, masked paths,
 *                    /proc/sys writability, open fds, cgroups)
 *   probe hog MB     allocate and touch MB megabytes, 1 MB at a time, printing progress
 *   probe forks N    fork up to N children that sleep; print how many forks succeeded
 *   probe spin SEC [N]  busy-loop N processes for SEC seconds; print cpu seconds / wall seconds
 *   probe notify MSG  send MSG to $NOTIFY_SOCKET as sd_notify(3) does; print notify=ok|error
 * Build: cc -static -O2 -o probe probe.c */
#define _GNU_SOURCE
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void status_fields(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        const char *keys[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "SigBlk:", "SigIgn:",
                              "NoNewPrivs:", "Seccomp:", NULL};
        for (int i = 0; keys[i]; i++) {
            size_t n = strlen(keys[i]);
            if (strncmp(line, keys[i], n) == 0) {
                char *v = line + n;
                while (*v == ' ' || *v == '\t') v++;
                v[strcspn(v, "\n")] = 0;
                printf("%.*s=%s\n", (int)(n - 1), keys[i], v);
            }
        }
    }
    fclose(f);
}

static void mounts(void) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        /* id parent maj:min root mountpoint options [optional...] - fstype source superopts */
        char *fields[32];
        int n = 0;
        for (char *tok = strtok(line, " \n"); tok && n < 32; tok = strtok(NULL, " \n"))
            fields[n++] = tok;
        int dash = -1;
        for (int i = 6; i < n; i++)
            if (strcmp(fields[i], "-") == 0) { dash = i; break; }
        if (n < 6 || dash < 0 || dash + 1 >= n) continue;
        printf("mount=%s %s %s\n", fields[4], fields[dash + 1], fields[5]);
    }
    fclose(f);
}

static void masked(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("masked %s=absent\n", path);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        int entries = 0;
        struct dirent *e;
        if (!d) { printf("masked %s=error %d\n", path, errno); return; }
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
        closedir(d);
        printf("masked %s=dir %d\n", path, entries);
        return;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("masked %s=error %d\n", path, errno); return; }
    char buf[4096];
    ssize_t r = read(fd, buf, sizeof buf);
    close(fd);
    printf("masked %s=read %zd\n", path, r);
}

static void fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    if (!d) return;
    int self = dirfd(d);
    printf("fds=");
    int first = 1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
        printf("%s%s", first ? "" : ",", e->d_name);
        first = 0;
    }
    printf("\n");
    rewinddir(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
        char p[300], t[4096];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        t[n < 0 ? 0 : n] = 0;
        printf("fd %s=%s\n", e->d_name, t);
    }
    closedir(d);
}

static void report(void) {
    char buf[4096];
    printf("pid=%d\n", getpid());
    printf("ppid=%d\n", getppid());
    if (gethostname(buf, sizeof buf) == 0) printf("hostname=%s\n", buf);
    if (getdomainname(buf, sizeof buf) == 0) printf("domainname=%s\n", buf);
    printf("uid=%d\ngid=%d\n", getuid(), getgid());
    gid_t groups[64];
    int n = getgroups(64, groups);
    printf("groups=");
    for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", groups[i]);
    printf("\n");
    if (getcwd(buf, sizeof buf)) printf("cwd=%s\n", buf);
    mode_t m = umask(0);
    printf("umask=%04o\n", m);
    status_fields();
    mounts();
    const char *paths[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                           "/proc/scsi", "/proc/acpi", "/sys/firmware", "/proc/latency_stats",
                           "/proc/interrupts", NULL};
    for (int i = 0; paths[i]; i++) masked(paths[i]);
    /* Write the current value back: if /proc/sys is wrongly writable and the UTS namespace
       is the host's, the probe must not rename the host. */
    char cur[256] = {0};
    int rfd = open("/proc/sys/kernel/hostname", O_RDONLY);
    ssize_t curlen = rfd >= 0 ? read(rfd, cur, sizeof cur - 1) : -1;
    if (rfd >= 0) close(rfd);
    int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
    if (fd >= 0 && curlen > 0) {
        ssize_t w = write(fd, cur, (size_t)curlen);
        printf("proc_sys_writable=%s\n", w == curlen ? "yes" : "no");
        close(fd);
    } else {
        printf("proc_sys_writable=no errno=%d\n", errno);
        if (fd >= 0) close(fd);
    }
    fd = open("/proc/sysrq-trigger", O_WRONLY);
    printf("sysrq_writable=%s\n", fd >= 0 ? "yes" : "no");
    if (fd >= 0) close(fd);
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        while (fgets(buf, sizeof buf, f)) printf("cgroup=%s", buf);
        fclose(f);
    }
    struct stat st;
    printf("dev_null=%s\n", stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) ? "chr" : "missing");
    char t[256];
    ssize_t l = readlink("/dev/ptmx", t, sizeof t - 1);
    t[l < 0 ? 0 : l] = 0;
    printf("dev_ptmx=%s\n", t);
    printf("stdin_tty=%s\n", isatty(0) ? "yes" : "no");
    const char *nss[] = {"pid", "net", "ipc", "uts", "mnt", "cgroup", NULL};
    for (int i = 0; nss[i]; i++) {
        char p[64], t[128];
        snprintf(p, sizeof p, "/proc/self/ns/%s", nss[i]);
        ssize_t n = readlink(p, t, sizeof t - 1);
        t[n < 0 ? 0 : n] = 0;
        printf("ns_%s=%s\n", nss[i], t);
    }
    fds();
}

static void hog(long mb) {
    for (long i = 0; i < mb; i++) {
        char *p = malloc(1 << 20);
        if (!p) { printf("hog malloc failed at %ld\n", i); return; }
        memset(p, 1, 1 << 20);
        if (i % 16 == 0) { printf("hog %ld\n", i); fflush(stdout); }
    }
    printf("hog done %ld\n", mb);
}

static void forks(long n) {
    long ok = 0;
    int err = 0;
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) { pause(); _exit(0); }
        if (p < 0) { err = errno; break; }
        ok++;
    }
    printf("forks_ok=%ld errno=%d\n", ok, err);
    fflush(stdout);
    /* The children die with this PID 1 when the PID namespace goes away. */
}

static double now(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Busy-loops `procs` processes for `secs` seconds of wall time; reports their total cpu time
 * over the wall time (1 process unthrottled: ~1.0; under a 0.5 CPU quota: ~0.5 at most). */
static void spin(double secs, int procs) {
    double w0 = now(CLOCK_MONOTONIC);
    for (int i = 1; i < procs; i++) {
        if (fork() == 0) {
            volatile unsigned long x = 0;
            while (now(CLOCK_MONOTONIC) - w0 < secs) x++;
            _exit(0);
        }
    }
    double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    volatile unsigned long x = 0;
    while (now(CLOCK_MONOTONIC) - w0 < secs) x++;
    while (wait(NULL) > 0) {}
    double wall = now(CLOCK_MONOTONIC) - w0, cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    cpu += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("spin_wall=%.3f\nspin_cpu=%.3f\nspin_ratio=%.3f\n", wall, cpu, cpu / wall);
}

static void notify(const char *msg) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof sa.sun_path) {
        printf("notify=error no NOTIFY_SOCKET\n");
        return;
    }
    strcpy(sa.sun_path, path);
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + strlen(path);
    if (path[0] == '@') sa.sun_path[0] = 0; /* the abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa, len) < 0)
        printf("notify=error %s\n", strerror(errno));
    else
        printf("notify=ok\n");
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && strcmp(argv[1], "hog") == 0) hog(atol(argv[2]));
    else if (argc >= 3 && strcmp(argv[1], "forks") == 0) forks(atol(argv[2]));
    else if (argc >= 3 && strcmp(argv[1], "notify") == 0) notify(argv[2]);
    else if (argc >= 3 && strcmp(argv[1], "spin") == 0) spin(atof(argv[2]), argc >= 4 ? atoi(argv[3]) : 1);
    else report();
    return 0;
}

/*
 * procacct: CPU time and peak RSS of a server's whole process tree, for
 * the pop3d benchmark (issue 7), without touching the server.
 *
 *   procacct listen LOG        log every task exit on the machine, from
 *                              the kernel's taskstats netlink interface,
 *                              until killed
 *   procacct snap ROOT         print the live tree under ROOT (ROOT too)
 *   procacct watch ROOT INCL   sample the tree's total RSS every
 *                              millisecond until SIGTERM, then print
 *                              "peak_kb=N samples=M" (INCL 1: count
 *                              ROOT itself, as for Dovecot's master)
 *   procacct idle MIN_PCT MAX_WAIT_MS
 *                              wait (at most MAX_WAIT_MS) for a 100 ms
 *                              window with at least MIN_PCT % of the
 *                              machine idle; print the idle % seen
 *   procacct quiet ROOT [COMM,...] [TIMEOUT_MS]
 *                              wait until no process under ROOT is left
 *                              (with COMMs: none of those names), then
 *                              print CLOCK_REALTIME in ns
 *
 * Why taskstats: the kernel sends, from inside exit(), each task's
 * exact CPU time and RSS high-water mark (CONFIG_TASKSTATS,
 * CONFIG_TASK_XACCT).  That covers every process of a session, also
 * those reaped by the server itself (popa3d's and pop3d's pre-login
 * child, the dot-lock helper), which getrusage(RUSAGE_CHILDREN) would
 * fold into one maximum, and it costs the server nothing, unlike
 * sampling /proc or ptrace.  A cgroup would count page cache too.
 * The high-water marks say nothing about when each process peaked, so
 * the whole tree's peak comes from sampling (watch): a lower bound that
 * misses only spikes shorter than a millisecond; the report takes the
 * larger of it and the largest single high-water mark.
 *
 * LOG lines:  x RECV_NS PID TGID PPID COMM ETIME_US CPU_NS HIWATER_KB
 * snap lines: s PID PPID COMM CPU_NS RSS_KB HWM_KB
 * RECV_NS is CLOCK_REALTIME when the record arrived (the task's end);
 * ETIME_US its elapsed time, so it lived [RECV_NS - ETIME_US, RECV_NS].
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/taskstats.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NLA_DATA(na)	((void *)((char *)(na) + NLA_HDRLEN))
#define GENLMSG_DATA(nh) ((void *)((char *)NLMSG_DATA(nh) + GENL_HDRLEN))
#define MAX_TREE	4096

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int
nl_send(int fd, uint16_t type, uint8_t cmd, uint16_t attr, const void *data,
    size_t len)
{
	struct {
		struct nlmsghdr		n;
		struct genlmsghdr	g;
		char			buf[256];
	} msg;
	struct nlattr *na;
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK };

	if (len > sizeof(msg.buf) - NLA_HDRLEN)
		return -1;
	memset(&msg, 0, sizeof(msg));
	msg.n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	msg.n.nlmsg_type = type;
	msg.n.nlmsg_flags = NLM_F_REQUEST;
	msg.n.nlmsg_pid = (uint32_t)getpid();
	msg.g.cmd = cmd;
	msg.g.version = 1;
	na = (struct nlattr *)GENLMSG_DATA(&msg.n);
	na->nla_type = attr;
	na->nla_len = (uint16_t)(NLA_HDRLEN + len);
	memcpy(NLA_DATA(na), data, len);
	msg.n.nlmsg_len += NLMSG_ALIGN(na->nla_len);
	return sendto(fd, &msg, msg.n.nlmsg_len, 0, (struct sockaddr *)&addr,
	    sizeof(addr)) == (ssize_t)msg.n.nlmsg_len ? 0 : -1;
}

static int
family_id(int fd)
{
	static char buf[8192];
	struct nlmsghdr *nh = (struct nlmsghdr *)buf;
	struct nlattr *na;
	ssize_t n;
	int left;

	if (nl_send(fd, GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
	    CTRL_ATTR_FAMILY_NAME, TASKSTATS_GENL_NAME,
	    sizeof(TASKSTATS_GENL_NAME)) == -1)
		return -1;
	if ((n = recv(fd, buf, sizeof(buf), 0)) <= 0 || !NLMSG_OK(nh, n) ||
	    nh->nlmsg_type == NLMSG_ERROR)
		return -1;
	na = (struct nlattr *)GENLMSG_DATA(nh);
	left = (int)(nh->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN));
	while (left >= (int)NLA_HDRLEN && na->nla_len >= NLA_HDRLEN) {
		if (na->nla_type == CTRL_ATTR_FAMILY_ID)
			return *(uint16_t *)NLA_DATA(na);
		left -= NLA_ALIGN(na->nla_len);
		na = (struct nlattr *)((char *)na + NLA_ALIGN(na->nla_len));
	}
	return -1;
}

static void
log_stats(FILE *out, uint64_t recv, const struct taskstats *t, size_t len)
{
	char comm[TS_COMM_LEN + 1];
	uint64_t hiwater = 0, cpu_ns;

	if (len < offsetof(struct taskstats, ac_tgid) + sizeof(t->ac_tgid))
		return;
	if (len >= offsetof(struct taskstats, hiwater_rss) +
	    sizeof(t->hiwater_rss))
		hiwater = t->hiwater_rss;
	memcpy(comm, t->ac_comm, TS_COMM_LEN);
	comm[TS_COMM_LEN] = '\0';
	for (char *p = comm; *p; p++)
		if (!isgraph((unsigned char)*p))
			*p = '_';
	/*
	 * cpu_run_virtual_total is the scheduler's sum_exec_runtime in ns,
	 * filled only with kernel.task_delayacct=1 (bench/run sets it);
	 * otherwise ac_utime + ac_stime, sampled at the tick (4 ms here).
	 */
	cpu_ns = t->cpu_run_virtual_total;
	if (cpu_ns == 0)
		cpu_ns = (t->ac_utime + t->ac_stime) * 1000;
	fprintf(out, "x %llu %u %u %u %s %llu %llu %llu\n",
	    (unsigned long long)recv, t->ac_pid, t->ac_tgid, t->ac_ppid,
	    comm[0] ? comm : "?", (unsigned long long)t->ac_etime,
	    (unsigned long long)cpu_ns, (unsigned long long)hiwater);
}

/* Walk the nested attributes of one TASKSTATS_CMD_NEW message. */
static void
parse_msg(FILE *out, uint64_t recv, struct nlmsghdr *nh)
{
	struct nlattr *na, *inner;
	int left, ileft;

	na = (struct nlattr *)GENLMSG_DATA(nh);
	left = (int)(nh->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN));
	while (left >= (int)NLA_HDRLEN && na->nla_len >= NLA_HDRLEN) {
		/* AGGR_TGID repeats the last thread's record: skip it. */
		if (na->nla_type == TASKSTATS_TYPE_AGGR_PID) {
			inner = NLA_DATA(na);
			ileft = na->nla_len - NLA_HDRLEN;
			while (ileft >= (int)NLA_HDRLEN &&
			    inner->nla_len >= NLA_HDRLEN) {
				if (inner->nla_type == TASKSTATS_TYPE_STATS)
					log_stats(out, recv, NLA_DATA(inner),
					    inner->nla_len - NLA_HDRLEN);
				ileft -= NLA_ALIGN(inner->nla_len);
				inner = (struct nlattr *)((char *)inner +
				    NLA_ALIGN(inner->nla_len));
			}
		}
		left -= NLA_ALIGN(na->nla_len);
		na = (struct nlattr *)((char *)na + NLA_ALIGN(na->nla_len));
	}
}

static volatile sig_atomic_t stop;

static void
on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static int
do_listen(const char *path)
{
	static char buf[1 << 16];
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK };
	struct sigaction sa;
	char cpus[64];
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	int fd, fam, rcvbuf = 8 << 20;
	FILE *out;
	ssize_t n;

	if ((out = fopen(path, "a")) == NULL) {
		perror(path);
		return 1;
	}
	if ((fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC)) == -1 ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == -1) {
		perror("procacct: netlink");
		return 1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
	    sizeof(rcvbuf));
	if ((fam = family_id(fd)) == -1) {
		fprintf(stderr, "procacct: no taskstats in this kernel\n");
		return 1;
	}
	snprintf(cpus, sizeof(cpus), "0-%ld", ncpu - 1);
	if (nl_send(fd, (uint16_t)fam, TASKSTATS_CMD_GET,
	    TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, cpus, strlen(cpus) + 1) ==
	    -1) {
		perror("procacct: register");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	fprintf(out, "# procacct listening, pid %d\n", (int)getpid());
	fflush(out);
	while (!stop) {
		struct nlmsghdr *nh = (struct nlmsghdr *)buf;
		uint64_t recv_ns;

		n = recv(fd, buf, sizeof(buf), 0);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			/* Records were dropped: say so, the report warns. */
			fprintf(out, "# recv: %s\n", strerror(errno));
			fflush(out);
			continue;
		}
		recv_ns = now_ns();
		for (; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n))
			if (nh->nlmsg_type == fam)
				parse_msg(out, recv_ns, nh);
		fflush(out);
	}
	fclose(out);
	return 0;
}

struct proc {
	int		pid, ppid;
	char		comm[32];
	uint64_t	cpu_ns, rss_kb, hwm_kb;
};

static int
read_proc(int pid, struct proc *p)
{
	char path[64], line[384];
	FILE *f;
	DIR *d;
	struct dirent *de;

	memset(p, 0, sizeof(*p));
	p->pid = pid;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "Name: %31s", p->comm) == 1)
			continue;
		if (sscanf(line, "PPid: %d", &p->ppid) == 1)
			continue;
		if (sscanf(line, "VmRSS: %llu", (unsigned long long *)
		    &p->rss_kb) == 1)
			continue;
		(void)sscanf(line, "VmHWM: %llu", (unsigned long long *)
		    &p->hwm_kb);
	}
	fclose(f);
	/* sum_exec_runtime of every thread, in ns: exact, unlike ticks. */
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		unsigned long long ns;

		if (de->d_name[0] == '.')
			continue;
		snprintf(line, sizeof(line), "/proc/%d/task/%s/schedstat",
		    pid, de->d_name);
		if ((f = fopen(line, "r")) == NULL)
			continue;
		if (fscanf(f, "%llu", &ns) == 1)
			p->cpu_ns += ns;
		fclose(f);
	}
	closedir(d);
	return 0;
}

/* Children of every thread of pid, appended to list. */
static int
children(int pid, int *list, int n)
{
	char path[64], tpath[384];
	DIR *d;
	struct dirent *de;
	FILE *f;
	int c;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	if ((d = opendir(path)) == NULL)
		return n;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(tpath, sizeof(tpath), "%s/%s/children", path,
		    de->d_name);
		if ((f = fopen(tpath, "r")) == NULL)
			continue;
		while (n < MAX_TREE && fscanf(f, "%d", &c) == 1)
			list[n++] = c;
		fclose(f);
	}
	closedir(d);
	return n;
}

static int
tree(int root, int *list)
{
	int n = 0, i;

	list[n++] = root;
	for (i = 0; i < n; i++)
		n = children(list[i], list, n);
	return n;
}

static int
do_snap(int root)
{
	static int list[MAX_TREE];
	struct proc p;
	int n = tree(root, list);

	for (int i = 0; i < n; i++)
		if (read_proc(list[i], &p) == 0)
			printf("s %d %d %s %llu %llu %llu\n", p.pid, p.ppid,
			    p.comm, (unsigned long long)p.cpu_ns,
			    (unsigned long long)p.rss_kb,
			    (unsigned long long)p.hwm_kb);
	return 0;
}

/* Resident pages of one process, from /proc/PID/statm (cheap). */
static uint64_t
rss_kb(int pid)
{
	char path[64];
	unsigned long long size, res = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/statm", pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return res * (uint64_t)(sysconf(_SC_PAGESIZE) / 1024);
}

static int
do_watch(int root, int incl)
{
	static int list[MAX_TREE];
	struct timespec ts = { 0, 1000000 };
	struct sigaction sa;
	uint64_t peak = 0, sum, samples = 0;
	int n;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	while (!stop) {
		n = tree(root, list);
		sum = 0;
		for (int i = incl ? 0 : 1; i < n; i++)
			sum += rss_kb(list[i]);
		if (sum > peak)
			peak = sum;
		samples++;
		nanosleep(&ts, NULL);
	}
	printf("peak_kb=%llu samples=%llu\n", (unsigned long long)peak,
	    (unsigned long long)samples);
	return 0;
}

static int
busy(int root, const char *comms)
{
	static int list[MAX_TREE];
	struct proc p;
	int n = tree(root, list);
	size_t len;

	for (int i = 1; i < n; i++) {
		if (comms == NULL)
			return 1;
		if (read_proc(list[i], &p) == -1)
			continue;
		len = strlen(p.comm);
		for (const char *c = comms; *c; ) {
			if (strncmp(c, p.comm, len) == 0 &&
			    (c[len] == ',' || c[len] == '\0'))
				return 1;
			c = strchr(c, ',');
			if (c == NULL)
				break;
			c++;
		}
	}
	return 0;
}

static int
do_quiet(int root, const char *comms, long timeout_ms)
{
	struct timespec ts = { 0, 1000000 };
	long waited = 0;

	while (busy(root, comms)) {
		if (waited++ >= timeout_ms) {
			fprintf(stderr, "procacct: tree under %d still busy\n",
			    root);
			printf("%llu\n", (unsigned long long)now_ns());
			return 1;
		}
		nanosleep(&ts, NULL);
	}
	printf("%llu\n", (unsigned long long)now_ns());
	return 0;
}

/* Idle and total jiffies of all CPUs, from /proc/stat. */
static void
cpu_jiffies(unsigned long long *idle, unsigned long long *total)
{
	unsigned long long v[10] = { 0 };
	FILE *f;

	*idle = *total = 0;
	if ((f = fopen("/proc/stat", "r")) == NULL)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
	    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
		*idle = v[3] + v[4];
		for (int i = 0; i < 8; i++)
			*total += v[i];
	}
	fclose(f);
}

/*
 * The machine is shared (builds, other test suites): start a measured
 * session in a quiet moment when there is one, and say how quiet.
 */
static int
do_idle(int min_pct, long max_wait_ms)
{
	struct timespec ts = { 0, 100000000 };
	unsigned long long i0, t0, i1, t1;
	double pct = 0;

	for (long waited = 0; ; waited += 100) {
		cpu_jiffies(&i0, &t0);
		nanosleep(&ts, NULL);
		cpu_jiffies(&i1, &t1);
		pct = t1 > t0 ? 100.0 * (double)(i1 - i0) /
		    (double)(t1 - t0) : 100.0;
		if (pct >= min_pct || waited >= max_wait_ms)
			break;
	}
	printf("%.0f\n", pct);
	return 0;
}

int
main(int argc, char *argv[])
{
	if (argc == 3 && strcmp(argv[1], "listen") == 0)
		return do_listen(argv[2]);
	if (argc == 3 && strcmp(argv[1], "snap") == 0)
		return do_snap(atoi(argv[2]));
	if (argc == 4 && strcmp(argv[1], "idle") == 0)
		return do_idle(atoi(argv[2]), atol(argv[3]));
	if (argc == 4 && strcmp(argv[1], "watch") == 0)
		return do_watch(atoi(argv[2]), atoi(argv[3]));
	if (argc >= 3 && argc <= 5 && strcmp(argv[1], "quiet") == 0)
		return do_quiet(atoi(argv[2]),
		    argc >= 4 && argv[3][0] ? argv[3] : NULL,
		    argc == 5 ? atol(argv[4]) : 10000);
	fprintf(stderr, "usage: procacct listen LOG | snap ROOT | "
	    "watch ROOT INCL | idle MIN_PCT MAX_WAIT_MS |\n"
	    "       quiet ROOT [COMM,...] [TIMEOUT_MS]\n");
	return 2;
}

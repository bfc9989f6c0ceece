#!/usr/bin/env python3
"""Turn a bench/run result directory into bench/RESULTS.md and the plot.

    report.py --results bench/work/results --out bench/RESULTS.md \
              --png bench/results.png

Inputs (written by bench/run):
  sessions.txt  one line per measured session: what ran, and the
                client's key=value line (times, octets, checks)
  acct.log      every task exit on the machine (procacct listen):
                CPU time, RSS high-water mark and lifetime
  snap.N.0/1    the live process tree before and after session N
                (for Dovecot, whose daemon outlives the sessions)
  lat.N         per-command latencies of the Nagle sessions
  callgrind-*/  callgrind profiles of one S2 session
  meta.txt      machine, sizes, versions

How a session's server cost is counted:
  * its processes are the tasks whose parent chain leads to the server's
    root (the front end for inetd servers, the master for Dovecot),
    that ended between this session's start and the next one's;
  * CPU time: the sum of those tasks' CPU, plus, for Dovecot, what its
    long-lived processes used in between (snapshot difference);
  * peak RSS of the tree: the tree's total RSS sampled every millisecond
    (procacct watch), or the largest single process's exact high-water
    mark if that is larger;
  * session RSS: the largest single process's high-water mark.
"""

import argparse
import bisect
import collections
import os
import random
import re
import shlex
import statistics
import subprocess
import sys

SERVERS = ("pop3d", "popa3d", "dovecot")
PEERS = ("popa3d", "dovecot")


def kv(line):
    out = {}
    for tok in shlex.split(line):
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def num(x, default=0):
    try:
        return int(x)
    except (TypeError, ValueError):
        return default


class Acct:
    """Exit records, sorted by arrival time."""

    def __init__(self, path):
        self.recs = []
        self.dropped = 0
        with open(path) as f:
            for line in f:
                if line.startswith("# recv"):
                    self.dropped += 1
                if not line.startswith("x "):
                    continue
                p = line.split()
                self.recs.append({
                    "recv": int(p[1]), "pid": int(p[2]), "tgid": int(p[3]),
                    "ppid": int(p[4]), "comm": p[5], "etime_us": int(p[6]),
                    "cpu_ns": int(p[7]), "hwm_kb": int(p[8])})
        self.recs.sort(key=lambda r: r["recv"])
        self.keys = [r["recv"] for r in self.recs]

    def window(self, t0, t1):
        i = bisect.bisect_left(self.keys, t0)
        j = bisect.bisect_left(self.keys, t1)
        return self.recs[i:j]


def read_snap(path):
    procs = {}
    if not os.path.exists(path):
        return procs
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 7 and p[0] == "s":
                procs[int(p[1])] = {"ppid": int(p[2]), "comm": p[3],
                                    "cpu_ns": int(p[4]),
                                    "rss_kb": int(p[5]),
                                    "hwm_kb": int(p[6])}
    return procs


def peak_of_sum(tasks):
    """Largest sum of high-water marks of tasks alive at one moment."""
    ev = []
    for t in tasks:
        end = t["recv"]
        start = end - t["etime_us"] * 1000
        ev.append((start, 1, t["hwm_kb"]))
        ev.append((end, 0, -t["hwm_kb"]))
    ev.sort()
    cur = best = 0
    for _, _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def s1_diffs(r, a="pop3d", b="popa3d"):
    """S1 wall time, server a minus server b, paired by round, in ms,
    sorted."""
    by_run = {}
    for srv in (a, b):
        for s in r.groups.get((srv, "S1", 0), []):
            if s["ok"]:
                by_run.setdefault(s["run"], {})[srv] = num(s["wall_us"])
    return sorted((v[a] - v[b]) / 1000.0
                  for v in by_run.values() if len(v) == 2)


def s1_paired(r, a="pop3d", b="popa3d"):
    """S1 wall time, server a minus server b, paired by round: (rounds,
    median, first quartile, third quartile) in ms, or None."""
    d = s1_diffs(r, a, b)
    if len(d) < 4:
        return None
    return (len(d), statistics.median(d), d[len(d) // 4],
            d[(3 * len(d)) // 4])


BOOTSTRAP = 2000        # resamples; seeded, so a report is reproducible


def bootstrap_medians(samples, stat):
    """stat() of BOOTSTRAP resamples (with replacement) of each list in
    samples, sorted."""
    rnd = random.Random(7)
    return sorted(stat(*[[rnd.choice(s) for _ in s] for s in samples])
                  for _ in range(BOOTSTRAP))


def s1_verdict(r):
    """The S1 target on the per-round differences, pop3d minus popa3d
    (rounds interleave the servers, so a round's pair shares the host's
    state): (ok, median, one-sided 95 % upper bound of the median, and
    the bootstrap standard error of the difference of the two servers'
    own medians, for comparison), or None.  Why not that difference:
    with logins spread over 10 ms by yescrypt's page faults, it moved by
    1.7 ms (its standard error at 201 rounds) from run to run, as much
    as the target allows; the paired median's bound is 4 times tighter."""
    d = s1_diffs(r)
    if len(d) < 20:
        return None
    up = bootstrap_medians([d], statistics.median)[int(0.95 * BOOTSTRAP)]
    a = [num(s["wall_us"]) / 1000.0
         for s in r.groups.get(("pop3d", "S1", 0), []) if s["ok"]]
    b = [num(s["wall_us"]) / 1000.0
         for s in r.groups.get(("popa3d", "S1", 0), []) if s["ok"]]
    se = statistics.pstdev(bootstrap_medians(
        [a, b], lambda x, y: statistics.median(x) - statistics.median(y)))
    return up <= 2.0, statistics.median(d), up, se


def s1_steal(r):
    """Median host steal over each server's S1 logins, as text."""
    return ", ".join("%s %s" % (srv, fmt(r.stat(srv, "S1", 0, "steal_pct"),
                                         " %", 0))
                     for srv in ("pop3d", "popa3d")
                     if r.stat(srv, "S1", 0, "steal_pct") is not None)


def account(sess, nxt_t0, acct, res):
    root = num(sess["root"])
    incl = sess.get("root_incl") == "1"
    t0 = num(sess["t0_ns"]) - 2_000_000
    s0 = read_snap(os.path.join(res, "snap.%s.0" % sess["seq"]))
    s1 = read_snap(os.path.join(res, "snap.%s.1" % sess["seq"]))
    members = set(s0) | set(s1)
    if not incl:
        members.discard(root)
    recs = acct.window(t0, nxt_t0)
    # Parent chains: a child's record comes before its parent's.
    known = {root} | members
    by_tgid = collections.defaultdict(list)
    changed = True
    while changed:
        changed = False
        for r in recs:
            if r["tgid"] not in known and r["ppid"] in known:
                known.add(r["tgid"])
                changed = True
    for r in recs:
        if r["tgid"] in known and (incl or r["tgid"] != root):
            by_tgid[r["tgid"]].append(r)
    tasks = []
    cpu = 0
    for tgid, rs in by_tgid.items():
        c = sum(r["cpu_ns"] for r in rs) - s0.get(tgid, {}).get("cpu_ns", 0)
        cpu += max(0, c)
        last = max(rs, key=lambda r: r["recv"])
        tasks.append({"recv": last["recv"], "etime_us": last["etime_us"],
                      "ppid": last["ppid"], "cpu_ns": max(0, c),
                      "hwm_kb": max(r["hwm_kb"] for r in rs),
                      "comm": last["comm"], "pid": tgid})
    persistent = 0
    for pid, p in s1.items():
        if pid == root and not incl:
            continue
        cpu += max(0, p["cpu_ns"] - s0.get(pid, {}).get("cpu_ns", 0))
        persistent += p["hwm_kb"]
    proc_peak = max([t["hwm_kb"] for t in tasks] +
                    [p["hwm_kb"] for pid, p in s1.items()
                     if incl or pid != root] + [0])
    # The sampled tree total (procacct watch) is a lower bound that can
    # miss a spike between samples; the largest single high-water mark is
    # exact; the sum of the high-water marks of the tasks alive together
    # is an upper bound that overstates multi-process designs.
    sampled = num(sess.get("peak_kb"))
    # The session process: the last one of the server's own name to
    # start (pop3d's is forked after login; popa3d serves in the process
    # that ran PAM; Dovecot's is "pop3").
    srv = sess.get("server")
    if srv == "popa3d":
        own = [t for t in tasks if t["comm"] == "popa3d" and
               t.get("ppid") == root]
    else:
        own = [t for t in tasks if t["comm"] == {"pop3d": "pop3d",
               "dovecot": "pop3"}.get(srv)]
    session_kb = None
    if own:
        session_kb = max(own, key=lambda t: t["recv"] - t["etime_us"] *
                         1000)["hwm_kb"]
    return {"cpu_ns": cpu, "tree_kb": max(sampled, proc_peak),
            "tree_ub_kb": persistent + peak_of_sum(tasks),
            "proc_kb": proc_peak, "ntasks": len(tasks),
            "session_kb": session_kb, "tasks": tasks,
            "comms": sorted(collections.Counter(
                t["comm"] for t in tasks).items())}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="", nd=1):
    if x is None:
        return "n/a"
    if isinstance(x, float) and nd >= 0:
        return ("%%.%df%%s" % nd) % (x, unit)
    return "%s%s" % (x, unit)


def ms(us):
    return None if us is None else us / 1000.0


def mb(kb):
    return None if kb is None else kb / 1024.0


class Results:
    def __init__(self, res):
        self.res = res
        self.meta = {}
        self.mbox = {}
        with open(os.path.join(res, "meta.txt")) as f:
            for line in f:
                d = kv(line)
                if line.startswith("mbox "):
                    self.mbox[int(d["n"])] = d
                elif line.startswith("version "):
                    self.meta.update({"version_" + k: v
                                      for k, v in d.items()})
                else:
                    self.meta.update(d)
        self.acct = Acct(os.path.join(res, "acct.log"))
        self.sessions = []
        with open(os.path.join(res, "sessions.txt")) as f:
            for line in f:
                if line.strip():
                    self.sessions.append(kv(line))
        self.sessions.sort(key=lambda s: num(s.get("t0_ns")))
        for i, s in enumerate(self.sessions):
            nxt = (num(self.sessions[i + 1]["t0_ns"])
                   if i + 1 < len(self.sessions) else 1 << 63)
            s.update(account(s, nxt, self.acct, res))
            s["ok"] = num(s.get("ok"))
            wall = num(s.get("wall_us"))
            s["xfer_us"] = max(1, wall - num(s.get("greet_us")) -
                               num(s.get("login_us")))
            host = num(s.get("host_ms"))
            s["steal_pct"] = (100.0 * num(s.get("steal_ms")) / host
                              if host > 0 and "steal_ms" in s else None)
        self.groups = collections.defaultdict(list)
        for s in self.sessions:
            self.groups[(s["server"], s["test"], num(s["size"]))].append(s)
        self.sizes = sorted(int(n) for n in
                            self.meta.get("sizes", "").split(",") if n)
        self.s6_size = min([k[2] for k in self.groups if k[1] == "S6"] or
                           [0])
        self.servers = [x for x in SERVERS
                        if any(k[0] == x for k in self.groups)]

    def stat(self, server, test, size, key):
        g = [s for s in self.groups.get((server, test, size), [])
             if s["ok"]]
        if not g:
            return None
        vals = [num(s.get(key)) if isinstance(s.get(key), str)
                else s.get(key) for s in g]
        return med(vals)

    def failures(self, server, test, size):
        g = self.groups.get((server, test, size), [])
        return [s for s in g if not s["ok"]]

    def ceiling(self, size):
        wire = self.stat("cat-%d" % size, "sink", size, "wire")
        wall = self.stat("cat-%d" % size, "sink", size, "wall_us")
        return None if not wire or not wall else wire / wall  # MB/s

    def parse_ceiling(self, size):
        wire = self.stat("parse-%d" % size, "parse", size, "wire")
        wall = self.stat("parse-%d" % size, "parse", size, "wall_us")
        return None if not wire or not wall else wire / wall

    def rtt_us(self, size):
        """One lock-step round trip through the front end (echo)."""
        w = self.stat("echo-%d" % size, "echo", size, "wall_us")
        return None if not w else w / float(size)

    def floor_ms(self, size):
        """Fastest lock-step S2: the bytes at the ceiling plus one round
        trip per message."""
        c, rtt = self.ceiling(size), self.rtt_us(size)
        b = num(self.mbox.get(size, {}).get("bytes"))
        if not c or rtt is None or not b:
            return None
        return (b / c + size * rtt) / 1000.0

    def quickack(self, server, test, size):
        return any(s.get("quickack") == "1"
                   for s in self.groups.get((server, test, size), []))

    def mode(self, server, test, size):
        """How the client drove the server: S2/S3/S5 ask CAPA and
        pipeline only if PIPELINING is announced."""
        g = [x for x in self.groups.get((server, test, size), [])
             if x["ok"]]
        if test.endswith("l") or test in ("S1", "S4", "nagle"):
            return "lock-step"
        if test == "S2p":
            return "pipelined"
        if not g:
            return "?"
        return ("pipelined" if all(x.get("pipelined") == "1" for x in g)
                else "lock-step")

    def per_run_of_ceiling(self, server, test, size):
        """Each run's MB/s as a share of the ceiling measured just before
        it (`cat` runs before every S2 run), with the host's steal share
        in both: [(percent, steal %, ceiling's steal %)]."""
        cat = {x.get("run"): x
               for x in self.groups.get(("cat-%d" % size, "sink", size), [])
               if x["ok"]}
        out = []
        for x in self.groups.get((server, test, size), []):
            c = cat.get("%s.%s" % (test, x.get("run")))
            if not x["ok"] or c is None or not num(c.get("wall_us")):
                continue
            rate = num(x.get("wire")) / x["xfer_us"]
            crate = num(c.get("wire")) / num(c.get("wall_us"))
            out.append((100.0 * rate / crate, x["steal_pct"],
                        c["steal_pct"]))
        return out

    def mbps(self, server, test, size):
        wire = self.stat(server, test, size, "wire")
        x = self.stat(server, test, size, "xfer_us")
        return None if not wire or not x else wire / x


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(rows, header):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:"
                          for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def size_label(r, n):
    b = num(r.mbox.get(n, {}).get("bytes"))
    return "%d msgs (%.0f MB)" % (n, b / 1e6) if b else "%d msgs" % n


def scenario_table(r, test, with_rate):
    rows = []
    for n in r.sizes:
        for srv in r.servers:
            fails = r.failures(srv, test, n)
            if not r.groups.get((srv, test, n)):
                continue
            wall = r.stat(srv, test, n, "wall_us")
            row = [size_label(r, n),
                   srv + (" *" if r.quickack(srv, test, n) else ""),
                   r.mode(srv, test, n)]
            row.append(fmt(ms(wall), "", 1) + (" (%d failed)" % len(fails)
                                               if fails else ""))
            if with_rate:
                rate = r.mbps(srv, test, n)
                ceil = r.ceiling(n)
                row += [fmt(rate, "", 0),
                        fmt(100.0 * rate / ceil if rate and ceil else None,
                            " %", 0)]
            row += [fmt(ms(r.stat(srv, test, n, "cpu_ns") / 1000.0
                        if r.stat(srv, test, n, "cpu_ns") is not None
                        else None), "", 1),
                    fmt(mb(r.stat(srv, test, n, "tree_kb")), "", 1),
                    fmt(mb(r.stat(srv, test, n, "proc_kb")), "", 1),
                    fmt(r.stat(srv, test, n, "steal_pct"), " %", 0)]
            if srv != "pop3d":
                p = r.stat("pop3d", test, n, "wall_us")
                row.append(fmt(ratio(p, wall), "x", 2))
            else:
                row.append("")
            rows.append(row)
    header = ["mbox", "server", "client", "wall ms"]
    if with_rate:
        header += ["MB/s", "of ceiling"]
    header += ["server CPU ms", "tree peak RSS MB", "largest process MB",
               "host steal", "pop3d/peer time"]
    return table(rows, header)


def nagle(r):
    rows = []
    per = {}
    for srv in r.servers:
        g = [s for s in r.groups.get((srv, "nagle", 10), []) if s["ok"]]
        if not g:
            continue
        cmds = collections.defaultdict(list)
        for s in g:
            path = os.path.join(r.res, "lat.%s" % s["seq"])
            if os.path.exists(path):
                for line in open(path):
                    p = line.split()
                    if len(p) == 3 and p[0] == "lat":
                        cmds[p[1]].append(int(p[2]))
        worst = max(num(s.get("lat_max_us")) for s in g)
        per[srv] = worst
        cells = []
        for c in ("greeting", "USER", "PASS", "STAT", "LIST", "UIDL",
                  "RETR", "QUIT"):
            v = cmds.get(c)
            cells.append("%.2f / %.2f" % (statistics.median(v) / 1000.0,
                                          max(v) / 1000.0) if v else "n/a")
        rows.append([srv] + cells + ["%.2f (%s)" % (
            worst / 1000.0, max(g, key=lambda s: num(
                s.get("lat_max_us")))["lat_max_cmd"])])
    return per, table(rows, ["server", "greeting", "USER", "PASS", "STAT",
                             "LIST", "UIDL", "RETR", "QUIT",
                             "worst after login"])


def parse_fn(path):
    """callgrind_annotate --inclusive=no output: {function: Ir}."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path, errors="replace"):
        m = re.match(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(.*\S)\s*$", line)
        if m and "PROGRAM TOTALS" not in line and \
                not m.group(2).startswith(("=>", "events annotated")):
            fn = re.sub(r"^\S*/", "", m.group(2))
            out[fn] = out.get(fn, 0) + int(m.group(1).replace(",", ""))
    return out


def callgrind(r):
    """Per process Ir.  A forked child's profile starts with everything
    its parent had counted at fork() (callgrind does not reset), so each
    later process is shown less the first (the one the front end
    started): what it did after fork, e.g. pop3d's session without the
    password hash its parent ran."""
    out = {}
    for name in sorted(os.listdir(r.res)):
        d = os.path.join(r.res, name)
        if not name.startswith("callgrind-") or not os.path.isdir(d):
            continue
        srv, _, scen = name[len("callgrind-"):].partition("-")
        files = []
        for fn in sorted(os.listdir(d)):
            m = re.match(r"callgrind\.out\.(\d+)$", fn)
            if not m:
                continue
            ir = None
            with open(os.path.join(d, fn), errors="replace") as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        ir = int(line.split()[1])
            files.append([int(m.group(1)), ir,
                          parse_fn(os.path.join(d, fn + ".fn"))])
        files.sort()
        if files:
            base_ir, base_fn = files[0][1] or 0, files[0][2]
            for f in files[1:]:
                f[1] = max(0, (f[1] or 0) - base_ir)
                f[2] = {k: v - base_fn.get(k, 0) for k, v in f[2].items()
                        if v - base_fn.get(k, 0) > 0}
        size = open(os.path.join(d, "size")).read().strip() \
            if os.path.exists(os.path.join(d, "size")) else "?"
        client = open(os.path.join(d, "client.txt")).read() \
            if os.path.exists(os.path.join(d, "client.txt")) else ""
        out[(srv, scen or "S2")] = {"files": files, "size": size,
                                    "client": kv(client)}
    order = {"S2": 0, "S4": 1, "S5": 2}
    return dict(sorted(out.items(), key=lambda kv_: (kv_[0][0],
                                                     order.get(kv_[0][1], 9))))


def top_lines(fns, total, n=15):
    rows = sorted(fns.items(), key=lambda kv_: -kv_[1])[:n]
    return "\n".join("%14s %5.1f%%  %s" % (format(v, ","),
                                           100.0 * v / total if total else 0,
                                           k) for k, v in rows)


def breakdown(r, test, size):
    """Median CPU, lifetime and peak RSS of each process of a session,
    the processes named by their order of start (pop3d#1 is the one the
    front end started)."""
    rows = []
    for srv in r.servers:
        per = collections.defaultdict(list)
        g = [s for s in r.groups.get((srv, test, size), []) if s["ok"]]
        for s in g:
            seen = collections.Counter()
            for t in sorted(s["tasks"], key=lambda t: t["recv"] -
                            t["etime_us"] * 1000):
                seen[t["comm"]] += 1
                per["%s#%d" % (t["comm"], seen[t["comm"]])].append(t)
        for name, ts in sorted(per.items()):
            if len(ts) * 2 < len(g):
                continue
            rows.append([srv, name,
                         "%.2f" % (med([t["cpu_ns"] for t in ts]) / 1e6),
                         "%.2f" % (med([t["etime_us"] for t in ts]) / 1e3),
                         "%.1f" % (med([t["hwm_kb"] for t in ts]) / 1024.0)])
    return table(rows, ["server", "process (by order of start)", "CPU ms",
                        "lifetime ms", "peak RSS MB"])


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def targets(r, nagle_worst, growth):
    t = []
    large = [n for n in r.sizes if n >= 10000]

    def cmp_time(test, n, factor):
        p = r.stat("pop3d", test, n, "wall_us")
        q = r.stat("popa3d", test, n, "wall_us")
        if p is None or q is None:
            return None, "pop3d %s, popa3d %s" % (fmt(ms(p)), fmt(ms(q)))
        return p <= factor * q, "%.1f ms vs %.1f ms (%.2fx)" % (
            p / 1000, q / 1000, p / q)

    def rate_note(test, n):
        p, q = r.mbps("pop3d", test, n), r.mbps("popa3d", test, n)
        return "%s %s vs %s MB/s (%sx)" % (
            {"S2l": "both lock-step", "S2p": "both pipelined"}[test],
            fmt(p, "", 0), fmt(q, "", 0),
            fmt(p / q if p and q else None, "", 1))

    for n in large:
        p, q = r.mbps("pop3d", "S2", n), r.mbps("popa3d", "S2", n)
        ok = None if p is None or q is None else p >= 5 * q
        t.append(("S2 throughput >= 5x popa3d, %s" % size_label(r, n),
                  verdict(ok), "%s vs %s MB/s (%sx); for context: %s; %s"
                  % (fmt(p, "", 0), fmt(q, "", 0),
                     fmt(p / q if p and q else None, "", 1),
                     rate_note("S2l", n), rate_note("S2p", n))))
        # Judged on each run against the ceiling measured just before
        # it (the median of those shares), not on a median of each: the
        # host's speed drifts from one minute to the next.
        c = r.ceiling(n)
        runs = r.per_run_of_ceiling("pop3d", "S2", n)
        share = med([x[0] for x in runs])
        ok = None if share is None else share >= 50
        fl = r.floor_ms(n)
        b = num(r.mbox.get(n, {}).get("bytes"))
        pl = r.mbps("pop3d", "S2l", n)
        t.append(("S2 throughput >= 50 %% of ceiling, %s" % size_label(r, n),
                  verdict(ok), "median share %s; medians %s of %s MB/s "
                  "(%s %%); each run against the ceiling just before it: "
                  "%s; lock-step: %s MB/s "
                  "(%s %%), the lock-step floor allows %s %%" % (
                      fmt(share, " %", 0), fmt(p, "", 0), fmt(c, "", 0),
                      fmt(100.0 * p / c if p and c else None, "", 0),
                      ", ".join("%.0f %% (host steal %s, ceiling's %s)" % (
                          x[0], fmt(x[1], " %", 0), fmt(x[2], " %", 0))
                          for x in runs) or "n/a",
                      fmt(pl, "", 0),
                      fmt(100.0 * pl / c if pl and c else None, "", 0),
                      fmt(100.0 * b / c / 1000.0 / fl if fl and c else None,
                          "", 0))))
    for test, factor, what in (("S4", 1.0, "S4 no slower than popa3d"),
                               ("S3", 1.0, "S3 no slower than popa3d"),
                               ("S5", 0.5, "S5 at most half of popa3d")):
        for n in r.sizes:
            ok, note = cmp_time(test, n, factor)
            if test != "S4":
                note += "; both lock-step: %s" % cmp_time(test + "l", n,
                                                          factor)[1]
            t.append(("%s, %s" % (what, size_label(r, n)), verdict(ok), note))
    p = r.stat("pop3d", "S1", 0, "wall_us")
    q = r.stat("popa3d", "S1", 0, "wall_us")
    v = s1_verdict(r)
    ok = None if v is None else v[0]
    note = "%s vs %s ms" % (fmt(ms(p), "", 2), fmt(ms(q), "", 2))
    if v is not None:
        note = ("per round, pop3d minus popa3d: median %+.2f ms, at most "
                "%+.2f ms (one-sided 95 %% bound, bootstrap); medians %s "
                "(their difference's standard error: %.2f ms)"
                % (v[1], v[2], note, v[3]))
    ps = r.stat("pop3d-session", "S1", 0, "wall_us")
    if ps is not None:
        note += ("; for context, pop3d with its default PAM session "
                 "(no -S): %s ms" % fmt(ms(ps), "", 2))
    note += "; host steal during the logins: %s" % s1_steal(r)
    t.append(("S1 within 2 ms of popa3d", verdict(ok), note))
    ok, note = cmp_time("S6", r.s6_size, 0.75)
    t.append(("S6 at most 0.75x popa3d", verdict(ok), note))
    worst = []
    for n in r.sizes:
        for test in ("S2", "S2l", "S2p", "S3", "S3l", "S4", "S5", "S5l"):
            p = r.stat("pop3d", test, n, "tree_kb")
            q = r.stat("popa3d", test, n, "tree_kb")
            if p is not None and q is not None:
                worst.append((p - q, test, n, p, q))
    if worst:
        d, test, n, p, q = max(worst)
        above = sum(1 for x in worst if x[0] > 0)
        t.append(("Peak RSS never above popa3d's (tree, S2-S5 in every "
                  "mode, every size)",
                  verdict(d <= 0), "worst: %s %s, %.2f vs %.2f MB; above "
                  "at %d of %d points; median of all: %.2f vs %.2f MB" % (
                      test, size_label(r, n), p / 1024, q / 1024, above,
                      len(worst), med([x[3] for x in worst]) / 1024,
                      med([x[4] for x in worst]) / 1024)))
    else:
        t.append(("Peak RSS never above popa3d's", "n/a", ""))
    g = growth.get("pop3d", (None,))[0]
    t.append(("Session RSS growth <= 64 bytes/message after login",
              verdict(None if g is None else g <= 64),
              "%s bytes/message" % fmt(g, "", 1)))
    w = nagle_worst.get("pop3d")
    t.append(("No Nagle/delayed-ACK stall (worst command after login "
              "< 20 ms)", verdict(None if w is None else w < 20000),
              "%s ms" % fmt(None if w is None else w / 1000.0, "", 2)))
    return t


def growth_per_message(r):
    """Slope of the session process's RSS high-water mark from 10
    messages to the largest mbox, S2: what it keeps per message."""
    out = {}
    if not r.sizes:
        return out
    big = r.sizes[-1]
    for srv in r.servers:
        a = r.stat(srv, "nagle", 10, "session_kb")
        b = r.stat(srv, "S2", big, "session_kb")
        if a is not None and b is not None:
            out[srv] = ((b - a) * 1024.0 / (big - 10), a, b)
    return out


def spool_checks(r):
    rows = []
    for n in r.sizes:
        path = r.mbox.get(n, {}).get("path")
        first = None
        if path and os.path.exists(path):
            with open(path, "rb") as f:
                head = f.read(8 << 20)
            i = head.find(b"\nFrom ", 1)
            first = i + 1 if i > 0 else None
        total = num(r.mbox.get(n, {}).get("bytes"))
        for srv in r.servers:
            s4 = [num(s.get("spool_after"), None) for s in
                  r.groups.get((srv, "S4", n), []) if s["ok"]]
            s5 = [num(s.get("spool_after"), None) for t in ("S5", "S5l")
                  for s in r.groups.get((srv, t, n), []) if s["ok"]]
            if not s4 and not s5:
                continue
            exp4 = total - first if first else None
            rows.append([size_label(r, n), srv,
                         ", ".join("%+d" % (x - exp4) if exp4 is not None
                                   and x is not None else "?" for x in s4),
                         ", ".join(str(x) for x in s5)])
    return table(rows, ["mbox", "server",
                        "S4: spool size after vs mbox less message 1",
                        "S5: spool size after (bytes)"])


def plot(r, png, res):
    dat = os.path.join(res, "plot.dat")
    with open(dat, "w") as f:
        for srv in r.servers:
            f.write("# %s\n" % srv)
            for n in r.sizes:
                mbytes = num(r.mbox[n]["bytes"]) / 1e6
                wall = r.stat(srv, "S2", n, "wall_us")
                rss = r.stat(srv, "S2", n, "tree_kb")
                sess = r.stat(srv, "S2", n, "session_kb")
                if wall is None or rss is None:
                    continue
                f.write("%.1f %.4f %.2f %s\n" % (
                    mbytes, wall / 1e6, rss / 1024.0,
                    "%.2f" % (sess / 1024.0) if sess else "NaN"))
            f.write("\n\n")
        f.write("# ceiling\n")
        for n in r.sizes:
            c = r.ceiling(n)
            if c:
                mbytes = num(r.mbox[n]["bytes"]) / 1e6
                f.write("%.1f %.4f 0\n" % (mbytes, mbytes / c))
        f.write("\n\n")
    plots_t = []
    plots_m = []
    for i, srv in enumerate(r.servers):
        plots_t.append("'%s' index %d using 1:2 with linespoints lw 2 "
                       "lc %d title '%s'" % (dat, i, i + 1, srv))
        plots_m.append("'%s' index %d using 1:3 with linespoints lw 2 "
                       "lc %d title '%s, whole tree'" % (dat, i, i + 1, srv))
        plots_m.append("'%s' index %d using 1:4 with linespoints dt 2 "
                       "lc %d title '%s, session process'" % (dat, i, i + 1,
                                                            srv))
    plots_t.append("'%s' index %d using 1:2 with linespoints dt 2 "
                   "title 'cat ceiling'" % (dat, len(r.servers)))
    gp = """set terminal pngcairo size 1200,520 font ',10'
set output '%s'
set multiplot layout 1,2 title 'S2 (STAT, LIST, UIDL, RETR all, QUIT), median of runs'
set logscale xy
set grid
set key top left
set xlabel 'mbox size (MB)'
set ylabel 'wall time (s)'
set title 'Session time'
plot %s
set ylabel 'peak RSS (MB)'
set key bottom right
set title 'Peak RSS: whole server tree, and the session process'
plot %s
unset multiplot
""" % (png, ", ".join(plots_t), ", ".join(plots_m))
    with open(os.path.join(res, "plot.gp"), "w") as f:
        f.write(gp)
    try:
        subprocess.run(["gnuplot", os.path.join(res, "plot.gp")], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print("report.py: gnuplot: %s" % e, file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args()
    r = Results(a.results)
    m = r.meta
    nagle_worst, nagle_table = nagle(r)
    growth = growth_per_message(r)
    cg = callgrind(r)
    L = []
    L.append("# pop3d benchmark results\n")
    L.append("Generated by `bench/run` (`make bench`) on %s: %s, %s CPUs, "
             "load average %s at the start; %s runs per point (S1: %s, "
             "S2: %s), "
             "medians; mbox seed %s.  pop3d %s, popa3d %s (Debian), "
             "Dovecot %s.  Method: `bench/README.md`.\n" % (
                 m.get("date"), m.get("host", "").replace("_", " "),
                 m.get("cpus"), m.get("loadavg"), m.get("runs"),
                 m.get("s1_runs", "7"), m.get("s2_runs", m.get("runs")),
                 m.get("seed"), m.get("version_pop3d"),
                 m.get("version_popa3d"), m.get("version_dovecot")))
    if m.get("pop3d_opts"):
        L.append("pop3d runs as `pop3d %s -p SERVICE` (`-S`: no PAM "
                 "session, as popa3d and Dovecot's default); S1 also "
                 "shows it with its default PAM session.\n"
                 % m["pop3d_opts"].replace("_", " "))
    if m.get("quick") == "1":
        L.append("**Quick run** (`--quick`): small and medium mbox only.\n")
    L.append("Times are wall clock at the client, from connect() to the "
             "server's close after QUIT (so a commit is inside).  MB/s is "
             "octets received after login divided by the time after "
             "login.  Server CPU and RSS cover every process of the "
             "session (the front end excluded; Dovecot's daemon "
             "included).  The ratio column is pop3d's time divided by "
             "the peer's: below 1 pop3d is faster.\n")
    idle = [num(s.get("idle"), None) for s in r.sessions
             if s.get("idle") is not None]
    if idle:
        L.append("The machine may be shared: the bench and its servers ran "
                 "at nice %s, and each session waited up to %s ms for a "
                 "100 ms window with %s %% of the CPUs idle; the median "
                 "idle share seen was %d %%, the lowest %d %%.\n" % (
                     m.get("nice", "0"), m.get("idle_wait_ms", "?"),
                     m.get("idle_pct", "?"), med(idle), min(idle)))
    steal = [s["steal_pct"] for s in r.sessions
             if s.get("steal_pct") is not None and s["test"] != "S1"]
    if steal:
        L.append("The machine is a VM: during the sessions (S1 aside) its "
                 "hypervisor took a median of %.0f %% of its CPU time "
                 "(steal, from /proc/stat), %.0f %% at most; the tables "
                 "show each point's median as *host steal*.  A session "
                 "that lost much of its time this way is slower for "
                 "reasons of the host.\n" % (med(steal), max(steal)))
    if r.acct.dropped:
        L.append("**Warning**: %d batches of exit records were dropped; "
                 "CPU and RSS may be low.\n" % r.acct.dropped)

    L.append("## Targets (pop3d against popa3d, issue 7)\n")
    L.append(table([list(x) for x in targets(r, nagle_worst, growth)],
                   ["target", "verdict", "measured"]))
    L.append("")

    L.append("## Ceiling: `cat` of the mbox through the same front end\n")
    rows = []
    for n in r.sizes:
        c = r.ceiling(n)
        p = r.parse_ceiling(n)
        cc = r.stat("cat-%d" % n, "sink", n, "client_cpu_us")
        cw = r.stat("cat-%d" % n, "sink", n, "wall_us")
        fl = r.floor_ms(n)
        b = num(r.mbox.get(n, {}).get("bytes"))
        rows.append([size_label(r, n),
                     fmt(ms(r.stat("cat-%d" % n, "sink", n, "wall_us")),
                         "", 1), fmt(c, "", 0),
                     fmt(100.0 * cc / cw if cc and cw else None, " %", 0),
                     fmt(p, "", 0), fmt(r.rtt_us(n), "", 1),
                     fmt(fl, "", 0),
                     fmt(100.0 * b / c / 1000.0 / fl if fl and c else None,
                         " %", 0),
                     fmt(r.stat("cat-%d" % n, "sink", n, "steal_pct"),
                         " %", 0)])
    L.append(table(rows, ["mbox", "cat wall ms", "cat MB/s",
                          "client CPU / wall", "client parsing RETR "
                          "replies, MB/s", "lock-step round trip us",
                          "lock-step S2 floor ms",
                          "floor's share of the ceiling", "host steal"]))
    L.append("\nThe client is not the bottleneck: it sinks `cat` at the "
             "rate above with the CPU share shown, and parses the same "
             "bytes framed as RETR replies (CRLF, byte-stuffed, one "
             "reply per message, `client -W`) at the fifth column's "
             "rate.  A lock-step client also waits one round trip per "
             "command: `cat` as an echo server through the same front end "
             "gives it, and the floor is the mbox at the ceiling plus one "
             "round trip per message, the best any lock-step server "
             "could do.\n")

    if any(s.get("quickack") == "1" for s in r.sessions):
        L.append("`*`: the server stalls on the client's delayed ACK "
                 "(see the Nagle section), about 40 ms per multi-line "
                 "reply, which would take hours on the large mbox; these "
                 "sessions used a client that re-arms TCP_QUICKACK after "
                 "every read (`client -q`), to measure the server's own "
                 "speed.  A plain client would see the stall.\n")
    L.append("S2, S3 and S5 use the client as an RFC 2449 client: CAPA "
             "after login, and the RETR/DELE commands pipelined (32 in "
             "flight) only if the server announces PIPELINING, else "
             "lock-step; the *client* column says which.  S2l, S3l and "
             "S5l drive every server lock-step, S2p pipelines for every "
             "server, announced or not.\n")
    for test, title, rate in (
            ("S2", "S2: STAT, LIST, UIDL, RETR all, QUIT (RFC 2449 "
             "client)", True),
            ("S2l", "S2l: S2 lock-step for every server", True),
            ("S2p", "S2p: S2 pipelined for every server, 32 in flight, "
             "announced or not", True),
            ("S3", "S3: S2 with DELE of 10 % scattered (RFC 2449 client)",
             True),
            ("S3l", "S3l: S3 lock-step for every server", True),
            ("S4", "S4: DELE 1, QUIT", False),
            ("S5", "S5: STAT, DELE all, QUIT (RFC 2449 client)", False),
            ("S5l", "S5l: S5 lock-step for every server", False)):
        L.append("## %s\n" % title)
        L.append(scenario_table(r, test, rate))
        L.append("")

    L.append("## S1: login and QUIT, empty maildrop\n")
    rows = []
    for srv in r.servers:
        w = r.stat(srv, "S1", 0, "wall_us")
        rows.append([srv, fmt(ms(w), "", 2),
                     fmt(ms(r.stat(srv, "S1", 0, "login_us")), "", 2),
                     fmt(ms(r.stat(srv, "S1", 0, "cpu_ns") / 1000.0
                            if r.stat(srv, "S1", 0, "cpu_ns") is not None
                            else None), "", 2),
                     fmt(mb(r.stat(srv, "S1", 0, "tree_kb")), "", 1),
                     fmt(ratio(r.stat("pop3d", "S1", 0, "wall_us"), w),
                         "x", 2) if srv != "pop3d" else ""])
    L.append(table(rows, ["server", "wall ms", "USER+PASS ms",
                          "server CPU ms", "tree peak RSS MB",
                          "pop3d/peer time"]))
    L.append("")
    d = s1_paired(r)
    if d is not None:
        L.append("Logins run interleaved, pop3d then popa3d in each round: "
                 "pop3d minus popa3d, per round, over %d rounds: median "
                 "%+.2f ms, middle half %+.2f to %+.2f ms.  The verdict "
                 "asks that median's one-sided 95 %% bootstrap bound to "
                 "be at most 2 ms (it compared the medians of the table "
                 "above before, whose difference moves by about 1.7 ms "
                 "from run to run at 201 rounds).  Host steal "
                 "during the logins, median: %s.  pop3d's privilege "
                 "separation hands a login from one process to another "
                 "once more than popa3d does (the session's fork; the "
                 "root parent has locked the spool before it), and a "
                 "handoff to an idle vCPU waits for the host to run it: "
                 "steal likely costs pop3d more.\n"
                 % (d[0], d[1], d[2], d[3], s1_steal(r)))
    w = r.stat("pop3d-session", "S1", 0, "wall_us")
    e = s1_paired(r, "pop3d-session", "pop3d")
    if w is not None and e is not None:
        bad = len(r.failures("pop3d-session", "S1", 0))
        L.append("The table's pop3d runs with `%s`, as the other "
                 "scenarios do: no PAM session, the PAM calls popa3d "
                 "makes and Dovecot's default.  pop3d as installed opens "
                 "one (pam_setcred, pam_open_session and "
                 "pam_close_session through common-session), run in the "
                 "same rounds: median %s ms; minus pop3d `-S`, per round: "
                 "median %+.2f ms, middle half %+.2f to %+.2f ms%s.\n"
                 % (r.meta.get("pop3d_opts", "").replace("_", " "),
                    fmt(ms(w), "", 2), e[1], e[2], e[3],
                    "; %d sessions failed" % bad if bad else ""))
    if r.s6_size:
        n = r.s6_size
        L.append("## S6: 50 concurrent S2 sessions, 50 accounts, %s each\n"
                 % size_label(r, n))
        rows = []
        for srv in r.servers:
            w = r.stat(srv, "S6", n, "wall_us")
            wire = r.stat(srv, "S6", n, "wire")
            fails = r.failures(srv, "S6", n)
            rows.append([srv, fmt(ms(w), "", 0) + (
                " (%d failed)" % len(fails) if fails else ""),
                fmt(wire / w if w and wire else None, "", 0),
                fmt(ms(r.stat(srv, "S6", n, "cpu_ns") / 1000.0
                       if r.stat(srv, "S6", n, "cpu_ns") is not None
                       else None), "", 0),
                fmt(mb(r.stat(srv, "S6", n, "tree_kb")), "", 1),
                fmt(ratio(r.stat("pop3d", "S6", n, "wall_us"), w), "x", 2)
                if srv != "pop3d" else ""])
        L.append(table(rows, ["server", "wall ms (all 50)", "MB/s total",
                              "server CPU ms", "tree peak RSS MB",
                              "pop3d/peer time"]))
        L.append("")

    L.append("### Where S1's time goes\n")
    L.append("Median per process over the S1 runs (CPU includes the "
             "password hash, about the same for all).\n")
    L.append(breakdown(r, "S1", 0))
    L.append("")
    if r.sizes:
        n = r.sizes[len(r.sizes) // 2]
        L.append("### Where S4's time goes, %s\n" % size_label(r, n))
        L.append(breakdown(r, "S4", n))
        L.append("")

    L.append("## Nagle / delayed ACK: S2 lock-step on 10 messages\n")
    L.append("Per command, median / worst in ms over the runs, measured "
             "by a client that sets neither TCP_NODELAY nor TCP_QUICKACK. "
             "A reply written in two small segments waits for the "
             "client's delayed ACK, about 40 ms.  USER/PASS include the "
             "password hash.\n")
    L.append(nagle_table)
    L.append("")

    L.append("## Memory per message\n")
    L.append("RSS high-water mark of the session process (the last "
             "process of the server's own name to start: pop3d's is "
             "forked after login, popa3d serves in the process that ran "
             "the password hash, whose 16 MB yescrypt buffer hides any "
             "growth below that), S2 on 10 messages and on the largest "
             "mbox.\n")
    big = r.sizes[-1] if r.sizes else 0
    L.append(table([[srv, fmt(mb(growth[srv][1]), "", 2),
                     fmt(mb(growth[srv][2]), "", 2),
                     fmt(growth[srv][0], "", 1)]
                    for srv in r.servers if srv in growth],
                   ["server", "10 messages, MB", "%d messages, MB" % big,
                    "bytes per message"]))
    L.append("")

    L.append("## Checks\n")
    L.append("Every reply was checked by the client; these count, over "
             "all sessions of the run, the RETRs whose unstuffed octets "
             "differ from LIST's size (or LIST's sum from STAT's), and "
             "lines not ended by CRLF.\n")
    rows = []
    for srv in r.servers:
        g = [s for s in r.sessions if s["server"] == srv]
        big = r.sizes[-1] if r.sizes else 0
        cc = r.stat(srv, "S2", big, "client_cpu_us")
        cw = r.stat(srv, "S2", big, "wall_us")
        rows.append([srv, str(len(g)), str(sum(1 for s in g if not s["ok"])),
                     str(sum(num(s.get("size_mismatch")) for s in g)),
                     str(sum(num(s.get("bare_lf")) for s in g)),
                     format(sum(num(s.get("retr")) for s in g), ","),
                     fmt(100.0 * cc / cw if cc and cw else None, " %", 0)])
    L.append(table(rows, ["server", "sessions", "failed", "size mismatches",
                          "bare LF", "messages retrieved",
                          "client CPU / wall, S2 on the largest mbox"]))
    L.append("")

    L.append("## Spool after DELE\n")
    L.append("S4 should leave the mbox less its first message (0 below; "
             "Dovecot adds its X-IMAPbase/X-UID/Status headers); S5 an "
             "empty file.\n")
    L.append(spool_checks(r))
    L.append("")

    if cg:
        L.append("## Callgrind: instructions per session\n")
        L.append("Instruction counts (Ir) do not depend on the machine's "
                 "load.  The first process is the one the front end "
                 "started; each later one (forked) is shown less the "
                 "first's count, since a forked profile starts with its "
                 "parent's.  A chrooted pre-login child cannot write its "
                 "profile and is missing (it parses a few lines).\n")
        for (srv, scen), d in cg.items():
            L.append("**%s, %s** on %s messages (%s octets received):\n" % (
                srv, scen, d["size"],
                format(num(d["client"].get("wire")), ",")))
            rows = []
            for i, (pid, ir, _) in enumerate(d["files"]):
                rows.append([str(pid), "first" if i == 0 else
                             "forked, less the first", fmt(
                                 format(ir, ",") if ir is not None
                                 else None)])
            L.append(table(rows, ["pid", "profile", "instructions (Ir)"]))
            wire = num(d["client"].get("wire"))
            if len(d["files"]) > 1:
                big = max(d["files"][1:], key=lambda f: f[1] or 0)
                L.append("\nThe costliest forked process (pid %d, the "
                         "session): %s Ir, %.2f Ir per octet of the mbox.  "
                         "Its hottest functions (self cost):\n" % (
                             big[0], format(big[1], ","),
                             big[1] / float(num(r.mbox.get(int(d["size"]), {})
                                                .get("bytes")) or 1)))
                L.append("```\n%s\n```\n" % top_lines(big[2], big[1]))
            elif d["files"]:
                f = d["files"][0]
                L.append("\nOne process, %s Ir%s.  Hottest functions "
                         "(self cost, password hash included):\n" % (
                             format(f[1] or 0, ","),
                             ", %.2f Ir per octet sent" % (f[1] / wire)
                             if wire and f[1] else ""))
                L.append("```\n%s\n```\n" % top_lines(f[2], f[1]))
        L.append("Profiles: `bench/work/results/callgrind-*/`; open with "
                 "`callgrind_annotate` or kcachegrind.\n")

    bad = [s for s in r.sessions if not s["ok"]]
    if bad:
        L.append("## Failed sessions\n")
        for s in bad:
            L.append("- %s %s size %s run %s: %s" % (
                s["server"], s["test"], s["size"], s["run"], s.get("err")))
        L.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    plot(r, a.png, a.results)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Deterministic mbox generator for the pop3d benchmark (issue 7).

    genmbox.py [-s SEED] -n COUNT -o FILE

The same SEED and COUNT give the same bytes on every machine (only
random.Random's documented, version-stable generators are used).

What a message looks like, and why:
  * sizes are lognormal with a median of about 4 KB (sigma 1.0), the
    shape of real mailboxes; every 1000th message (1000, 2000, ...) is a
    1-5 MB base64 attachment, so that a server streaming a message
    through a fixed buffer and one holding it whole look different;
  * realistic headers: Return-Path, two or three Received, Message-ID,
    Date, From, To, Subject, MIME headers, sometimes List-Id, X-Mailer;
  * about one message in six is multipart/mixed with a base64 part;
  * text bodies have lines starting with "." (including a lone "." and
    "..", which a server must byte-stuff, RFC 1939 section 3) and lines
    starting with ">From " (mboxo quoting), and "From " in mid-line;
  * LF line endings, one blank line before each "From " separator line.

1,000 messages make about 11 MB, 10,000 about 100 MB, 50,000 about 470 MB.
"""

import argparse
import base64
import math
import os
import random
import sys

WORDS = (
    "the of and to in is that for it as was with be by on not he this are "
    "or his from at which but have an they you were her she there been one "
    "all we their has would when if so no will can more other its into "
    "about than them only some could time these two may then do first any "
    "my now such like our over man me even most made after also did many "
    "before must through back years where much your way well down should "
    "because each just those people how too little state good very make "
    "world still own see men work long get here between both life being "
    "under never day same another know while last might us great old year "
    "off come since against go came right used take three meeting report "
    "server mailbox invoice budget quarterly release patch schedule review "
    "deadline attached please regards thanks agenda minutes draft final"
).split()

FIRST = ("alice bob carol dave erin frank grace heidi ivan judy mallory "
         "niaj olivia peggy rupert sybil trent victor walter").split()
DOMAINS = ("example.org example.com example.net mail.example.org "
           "lists.example.net corp.example.com").split()
MAILERS = ("Mutt/2.2.9 (2022-11-12)", "Thunderbird 115.3.1",
           "Evolution 3.46.4", "Roundcube Webmail/1.6.5",
           "Microsoft Outlook 16.0")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
          "Oct", "Nov", "Dec")

# Lines a POP3 server must treat with care, mixed into text bodies.
TRICKY = (".", "..", ".hidden line starting with a dot",
          "...and so it goes on", ">From the archives: quoted envelope line",
          ">From someone@example.org Mon Jan  1 00:00:00 2024",
          ">>From twice quoted", "Sent From my phone",
          "-- ", ". ", ".\t")

MEDIAN = 4096.0
SIGMA = 0.97
MAX_SMALL = 512 * 1024
BIG_EVERY = 1000


class Pools:
    """Precomputed text and base64 lines, sliced per message for speed."""

    def __init__(self, rng):
        self.text = []
        for _ in range(8192):
            n = rng.randint(6, 13)
            line = " ".join(rng.choice(WORDS) for _ in range(n))
            if rng.random() < 0.3:
                line += "."
            line = line.capitalize()
            if line.startswith("From "):
                line = ">" + line  # mboxo quoting, as an MDA would
            self.text.append(line)
        raw = bytes(rng.getrandbits(8) for _ in range(3 * 57 * 4096))
        b64 = base64.b64encode(raw).decode("ascii")
        self.b64 = [b64[i:i + 76] for i in range(0, len(b64), 76)]


def fmt_date(t):
    """RFC 5322 date and the ctime() form used on "From " lines."""
    days = t // 86400
    sec = t % 86400
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    wd = DAYS[(days + 3) % 7]
    hh, mm, ss = sec // 3600, sec // 60 % 60, sec % 60
    rfc = "%s, %d %s %d %02d:%02d:%02d +0000" % (wd, d, MONTHS[m - 1], y,
                                                 hh, mm, ss)
    ctime = "%s %s %2d %02d:%02d:%02d %d" % (wd, MONTHS[m - 1], d, hh, mm,
                                             ss, y)
    return rfc, ctime


def addr(rng):
    return "%s.%s@%s" % (rng.choice(FIRST), rng.choice(FIRST),
                         rng.choice(DOMAINS))


def headers(rng, i, t, user):
    sender = addr(rng)
    rfc, ctime = fmt_date(t)
    h = ["From %s %s" % (sender, ctime),
         "Return-Path: <%s>" % sender]
    for hop in range(rng.randint(2, 3)):
        h.append("Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n"
                 "\tby mail.example.org (Postfix) with ESMTPS id %08X\n"
                 "\tfor <%s@example.org>; %s"
                 % (hop, rng.choice(DOMAINS), hop, rng.choice(DOMAINS),
                    rng.randint(1, 254), rng.getrandbits(32), user, rfc))
    h.append("Message-ID: <%d.%08x@%s>" % (i, rng.getrandbits(32),
                                           rng.choice(DOMAINS)))
    h.append("Date: " + rfc)
    h.append("From: %s <%s>" % (rng.choice(FIRST).capitalize(), sender))
    h.append("To: %s@example.org" % user)
    h.append("Subject: %s %d" % (" ".join(rng.choice(WORDS)
                                           for _ in range(rng.randint(2, 7))),
                                  i))
    if rng.random() < 0.3:
        h.append("List-Id: <%s.lists.example.net>" % rng.choice(WORDS))
    if rng.random() < 0.5:
        h.append("X-Mailer: " + rng.choice(MAILERS))
    h.append("MIME-Version: 1.0")
    return h


def text_lines(rng, pools, nbytes):
    out = []
    size = 0
    ntext = len(pools.text)
    while size < nbytes:
        r = rng.random()
        if r < 0.01:
            line = rng.choice(TRICKY)
        elif r < 0.06:
            line = ""
        else:
            line = pools.text[rng.randrange(ntext)]
        out.append(line)
        size += len(line) + 1
    return out


def b64_lines(rng, pools, nbytes):
    n = max(1, nbytes // 77)
    out = []
    nb64 = len(pools.b64)
    while n > 0:
        start = rng.randrange(nb64)
        take = min(n, nb64 - start)
        out.extend(pools.b64[start:start + take])
        n -= take
    return out


def message(rng, pools, i, t, user, size):
    h = headers(rng, i, t, user)
    hsize = sum(len(x) + 1 for x in h)
    body_size = max(64, size - hsize - 200)
    if i % BIG_EVERY == 0 or rng.random() < 1.0 / 6:
        boundary = "=_%016x" % rng.getrandbits(64)
        tsize = min(body_size // 4, 2048) if i % BIG_EVERY == 0 \
            else body_size // 3
        h.append('Content-Type: multipart/mixed; boundary="%s"' % boundary)
        body = ["This is a multi-part message in MIME format.", "",
                "--" + boundary,
                "Content-Type: text/plain; charset=us-ascii", ""]
        body += text_lines(rng, pools, tsize)
        body += ["", "--" + boundary,
                 "Content-Type: application/octet-stream; "
                 'name="file%d.bin"' % i,
                 "Content-Transfer-Encoding: base64",
                 'Content-Disposition: attachment; filename="file%d.bin"' % i,
                 ""]
        body += b64_lines(rng, pools, body_size - tsize)
        body += ["", "--" + boundary + "--"]
    else:
        h.append("Content-Type: text/plain; charset=us-ascii")
        h.append("Content-Transfer-Encoding: 7bit")
        body = text_lines(rng, pools, body_size)
    return "\n".join(h) + "\n\n" + "\n".join(body) + "\n\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-s", "--seed", type=int, default=7)
    ap.add_argument("-n", "--count", type=int, required=True)
    ap.add_argument("-u", "--user", default="bench")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    pools = Pools(random.Random(a.seed ^ 0x5eed))
    t = 1700000000
    tmp = a.output + ".tmp"
    total = 0
    with open(tmp, "w", encoding="ascii", newline="\n") as f:
        for i in range(1, a.count + 1):
            if i % BIG_EVERY == 0:
                size = rng.randint(1 << 20, 5 << 20)
            else:
                size = int(min(MAX_SMALL, max(600, math.exp(
                    rng.gauss(math.log(MEDIAN), SIGMA)))))
            t += rng.randint(1, 600)
            m = message(rng, pools, i, t, a.user, size)
            f.write(m)
            total += len(m)
    os.replace(tmp, a.output)
    print("%s: %d messages, %d bytes" % (a.output, a.count, total),
          file=sys.stderr)


if __name__ == "__main__":
    main()

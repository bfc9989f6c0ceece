# shellcheck shell=bash
# Helpers for pop3d's integration tests, sourced by ./run and the t-*
# scripts: results, bounded waits, and the front ends (xinetd,
# systemd-socket-activate, stunnel), each started on 127.0.0.1 from the
# configuration shipped in contrib/, so that the shipped files are tested.
#
# The runner exports: IT_DIR (private directory), IT_HERE, IT_TOP, POP3D,
# IT_SERVICE (the test's PAM service), IT_CA, IT_CERT, IT_KEY, IT_SYSLOG
# (captured syslog), IT_RHOST (PAM_RHOST seen by pam_exec), and the ports
# of the front ends it started.

IT_PY=/usr/bin/python3

# One check's verdict: "ok - NAME" or "not ok - NAME" with the reason,
# and a line in $IT_DIR/results, which the runner counts.
pass() {
	echo "ok - $1"
	echo "PASS $1" >>"$IT_DIR/results"
}

fail() {
	echo "not ok - $1"
	if [ -n "${2:-}" ]; then
		printf '%s\n' "$2" | head -n 40 | sed 's/^/#   /'
	fi
	echo "FAIL $1" >>"$IT_DIR/results"
}

# check NAME COMMAND...: one check, bounded by the command's own timeouts.
check() {
	local name=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "$out
(exit status $rc)"
	fi
}

# The python helper, never running for more than two minutes.
itest() {
	timeout 120 "$IT_PY" "$IT_HERE/itest.py" "$@"
}

# A message in a failed check's output.
say() {
	printf '%s\n' "$*"
}

# Start a command in the background, its output to $IT_DIR/NAME.out.
# Sets started_pid; the runner stops whatever is listed in $IT_DIR/pids.
start_bg() {
	local name=$1
	shift
	"$@" >"$IT_DIR/$name.out" 2>&1 </dev/null &
	started_pid=$!
	echo "$started_pid $name" >>"$IT_DIR/pids"
	echo "$started_pid" >"$IT_DIR/$name.pid"
}

# Whether a process is alive (a zombie is not).
alive() {
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# Stop one process by pid: TERM, at most 5 s, then KILL.
stop_pid() {
	local pid=$1 _
	alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		alive "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 20); do
		alive "$pid" || return 0
		sleep 0.1
	done
	say "process $pid did not end"
	return 1
}

# Stop a front end started with start_bg: its sessions first (pop3d
# passes TERM on and ends without UPDATE), then the front end itself.
stop_fe() {
	local name=$1 pid child
	[ -f "$IT_DIR/$name.pid" ] || return 0
	pid=$(cat "$IT_DIR/$name.pid")
	for child in $(pgrep -P "$pid" 2>/dev/null); do
		stop_pid "$child" || true
	done
	stop_pid "$pid"
	rm -f "$IT_DIR/$name.pid"
}

# Wait (at most 10 s) until something listens on 127.0.0.1:PORT, while
# the process PID lives.
wait_listen() {
	local port=$1 pid=$2 _
	for _ in $(seq 100); do
		if ss -Hltn "sport = :$port" | grep -q .; then
			return 0
		fi
		if ! alive "$pid"; then
			say "the front end exited"
			return 1
		fi
		sleep 0.1
	done
	say "nothing listens on port $port after 10 s"
	return 1
}

free_port() {
	itest freeport
}

# start_xinetd NAME PORT ARGS: xinetd in the foreground with its own
# configuration and pid file: contrib/xinetd.d/pop3, renamed, on
# 127.0.0.1:PORT, running $POP3D ARGS.
start_xinetd() {
	local name=$1 port=$2 args=$3 conf
	conf=$IT_DIR/$name.conf
	sed -e "s|^service pop3\$|service pop3-$name|" \
	    -e "s|^{\$|{\n\ttype\t\t= UNLISTED\n\tport\t\t= $port\n\tbind\t\t= 127.0.0.1|" \
	    -e "s|^\(\tserver\t*= \).*|\1$POP3D|" \
	    -e "s|^\(\tserver_args\t*= \).*|\1$args|" \
	    -e "/^\tflags\t*= IPv6/d" \
	    "$IT_TOP/contrib/xinetd.d/pop3" >"$conf"
	if ! grep -q "^	server		= $POP3D\$" "$conf" ||
	    ! grep -q "^	server_args	= $args\$" "$conf" ||
	    ! grep -q "^	port		= $port\$" "$conf"; then
		say "contrib/xinetd.d/pop3 changed: cannot derive $conf"
		return 1
	fi
	start_bg "$name" xinetd -dontfork -pidfile "$IT_DIR/$name.xpid" \
	    -f "$conf"
	wait_listen "$port" "$started_pid"
}

# start_sa NAME PORT [-E VAR=VALUE]... -- ARGS: systemd-socket-activate
# --accept --inetd, the stand-in for pop3d.socket's Accept=yes: one pop3d
# per connection, on fds 0 and 1 (without --accept, pop3d would get the
# listening socket).  Only what -E names reaches pop3d's environment.
start_sa() {
	local name=$1 port=$2 opts=()
	shift 2
	while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	[ "$#" -gt 0 ] && shift
	start_bg "$name" systemd-socket-activate --accept --inetd \
	    -l "127.0.0.1:$port" "${opts[@]}" "$POP3D" "$@"
	wait_listen "$port" "$started_pid"
}

# start_stunnel NAME PORT ARGS: contrib/stunnel/pop3s.conf (exec mode) on
# 127.0.0.1:PORT with the test's certificate, exec'ing $POP3D -s ARGS.
start_stunnel() {
	local name=$1 port=$2 args=$3 conf
	conf=$IT_DIR/$name.conf
	{
		echo "pid ="
		sed -e "s|^accept = 995\$|accept = 127.0.0.1:$port|" \
		    -e "s|^exec = .*|exec = $POP3D|" \
		    -e "s|^execArgs = pop3d -s\$|execArgs = pop3d -s $args|" \
		    -e "s|^cert = .*|cert = $IT_CERT|" \
		    -e "s|^key = .*|key = $IT_KEY|" \
		    "$IT_TOP/contrib/stunnel/pop3s.conf"
	} >"$conf"
	if ! grep -q "^accept = 127.0.0.1:$port\$" "$conf" ||
	    ! grep -q "^exec = $POP3D\$" "$conf" ||
	    ! grep -q "^execArgs = pop3d -s $args\$" "$conf"; then
		say "contrib/stunnel/pop3s.conf changed: cannot derive $conf"
		return 1
	fi
	start_bg "$name" stunnel4 "$conf"
	wait_listen "$port" "$started_pid"
}

# start_stunnel_proxy NAME PORT TARGET: contrib/stunnel/pop3s-systemd.conf,
# stunnel forwarding to a plain front end on 127.0.0.1:TARGET.
start_stunnel_proxy() {
	local name=$1 port=$2 target=$3 conf
	conf=$IT_DIR/$name.conf
	{
		echo "pid ="
		sed -e "s|^accept = 995\$|accept = 127.0.0.1:$port|" \
		    -e "s|^connect = 127.0.0.1:110\$|connect = 127.0.0.1:$target|" \
		    -e "s|^cert = .*|cert = $IT_CERT|" \
		    -e "s|^key = .*|key = $IT_KEY|" \
		    "$IT_TOP/contrib/stunnel/pop3s-systemd.conf"
	} >"$conf"
	if ! getent passwd stunnel4 >/dev/null; then
		sed -i -e '/^setuid = /d' -e '/^setgid = /d' "$conf"
	fi
	if ! grep -q "^accept = 127.0.0.1:$port\$" "$conf" ||
	    ! grep -q "^connect = 127.0.0.1:$target\$" "$conf"; then
		say "contrib/stunnel/pop3s-systemd.conf changed: cannot" \
		    "derive $conf"
		return 1
	fi
	start_bg "$name" stunnel4 "$conf"
	wait_listen "$port" "$started_pid"
}

# fe_set NAME: FE=(the client arguments of itest) for a standard front end.
# shellcheck disable=SC2034
fe_set() {
	case $1 in
	xinetd)	FE=(--port "$IT_PORT_XINETD") ;;
	sa)	FE=(--port "$IT_PORT_SA") ;;
	tls)	FE=(--port "$IT_PORT_TLS" --ssl --cafile "$IT_CA") ;;
	proxy)	FE=(--port "$IT_PORT_PROXY" --ssl --cafile "$IT_CA") ;;
	*)	say "no front end $1"; return 1 ;;
	esac
}

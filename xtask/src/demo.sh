# LibraFlux demo, run inside the VM by `cargo xtask demo` (bash, in the workspace directory).
# The VM's root namespace is the director; a client and two backends live in namespaces.
set -euo pipefail
libraflux=$PWD/target/debug/libraflux
export NO_COLOR=1
config=docs/examples/demo.yaml
step() { printf '\n=== %s\n' "$*"; }

step "kernel and IPVS"
uname -r
grep -E '^ip_vs' /proc/modules | cut -d' ' -f1 | tr '\n' ' '; echo

step "topology: client 10.0.1.2 -> director (VIP 10.96.0.10 on d-client) -> backends 10.0.2.2, 10.0.3.2"
sysctl -qw net.ipv4.ip_forward=1
link() { # link NS DIRECTOR_IF NS_IF SUBNET
    ip netns add "$1"
    ip link add "$2" type veth peer name "$3" netns "$1"
    ip addr add "$4.1/24" dev "$2"
    ip link set "$2" up
    ip -n "$1" addr add "$4.2/24" dev "$3"
    ip -n "$1" link set "$3" up
    ip -n "$1" link set lo up
    ip -n "$1" route add default via "$4.1"
}
link client d-client eth0 10.0.1
link backend-1 d-b1 eth0 10.0.2
link backend-2 d-b2 eth0 10.0.3
ip addr add 10.96.0.10/32 dev d-client
declare -A httpd
start_backend() {
    mkdir -p /tmp/www-$1
    echo "hello from backend-$1" > /tmp/www-$1/index.html
    ip netns exec backend-$1 busybox httpd -f -p 8080 -h /tmp/www-$1 &
    httpd[$1]=$!
}
start_backend 1
start_backend 2

step "libraflux validate -c $config"
$libraflux validate -c $config

step "libraflux apply --dry-run (the plan; nothing is written)"
$libraflux apply -c $config --dry-run

step "libraflux apply"
$libraflux apply -c $config

step "ipvsadm -Ln (read independently of LibraFlux)"
ipvsadm -Ln

# bash's /dev/tcp: the static busybox's wget cannot resolve addresses without NSS.
get='exec 3<>/dev/tcp/10.96.0.10/80 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && tail -n 1 <&3'
requests() {
    for i in $(seq "$1"); do
        ip netns exec client timeout 3 bash -c "$get"
    done | sort | uniq -c
}

step "20 HTTP requests from the client to http://10.96.0.10/"
requests 20

step "libraflux apply again: nothing to do"
$libraflux apply -c $config | tail -n 1

step "libraflux daemon: health checks every second, metrics on 127.0.0.1:9469"
$libraflux daemon -c $config --reconcile-interval 2s 2> /tmp/daemon.log &
daemon=$!
for i in $(seq 50); do grep -q "daemon ready" /tmp/daemon.log && break; sleep 0.2; done
grep -E "eBPF|daemon ready" /tmp/daemon.log | sed 's/^/  log: /'

step "backend-2's web server stops: its health check fails, the daemon sets its weight to 0"
kill "${httpd[2]}"; wait "${httpd[2]}" 2> /dev/null || true
for i in $(seq 50); do ipvsadm -Ln | grep -q "10.0.3.2:8080 *Masq *0 " && break; sleep 0.2; done
grep -E "unhealthy|applied" /tmp/daemon.log | sed 's/^/  log: /'
ipvsadm -Ln
step "10 requests: all reach backend-1"
requests 10

step "backend-2 comes back: after 2 good checks its weight is restored"
start_backend 2
for i in $(seq 50); do ipvsadm -Ln | grep -q "10.0.3.2:8080 *Masq *1 " && break; sleep 0.2; done
ipvsadm -Ln
requests 10

step "libraflux status (kernel table + the daemon's health and eBPF view)"
$libraflux status

step "a few of the daemon's metrics (curl-free: bash /dev/tcp)"
metrics='exec 3<>/dev/tcp/127.0.0.1/9469 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3'
bash -c "$metrics" > /tmp/metrics.txt
grep -E '^libraflux_(backend_healthy|ipvs_connections_total|reconcile_runs_total|ebpf_attached|health_checks_total)' /tmp/metrics.txt | head -n 16
sed -n '/^$/,$p' /tmp/metrics.txt | tail -n +2 | promtool check metrics && echo "promtool check metrics: ok"

step "SIGTERM: the daemon exits and leaves IPVS in place (traffic keeps flowing)"
kill -TERM $daemon; wait $daemon
ipvsadm -Ln | grep -c Masq | sed 's/^/  backends still in IPVS: /'

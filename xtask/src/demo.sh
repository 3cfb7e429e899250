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

step "topology: client 10.0.1.2 -> director (VIP 10.96.0.10 on lfvip0) -> backends 10.0.2.2, 10.0.3.2"
sysctl -qw net.ipv4.ip_forward=1
ip link add lfvip0 type dummy
ip addr add 10.96.0.10/32 dev lfvip0
ip link set lfvip0 up
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
for n in 1 2; do
    mkdir -p /tmp/www-$n
    echo "hello from backend-$n" > /tmp/www-$n/index.html
    ip netns exec backend-$n busybox httpd -p 8080 -h /tmp/www-$n
done

step "libraflux validate -c $config"
$libraflux validate -c $config

step "libraflux apply --dry-run (the plan; nothing is written)"
$libraflux apply -c $config --dry-run

step "libraflux apply"
$libraflux apply -c $config

step "ipvsadm -Ln (read independently of LibraFlux)"
ipvsadm -Ln

step "eBPF counters on the director: VIP traffic in from the client, per-backend traffic out after DNAT"
$libraflux debug count-flows --interface d-client --direction ingress \
    --watch tcp:10.96.0.10:80 --duration 15s > /tmp/vip-counts &
vip_counter=$!
$libraflux debug count-flows --interface d-b1 --interface d-b2 --direction egress \
    --watch tcp:10.0.2.2:8080 --watch tcp:10.0.3.2:8080 --duration 15s > /tmp/backend-counts &
backend_counter=$!
sleep 2

step "20 HTTP requests from the client to http://10.96.0.10/"
# bash's /dev/tcp: the static busybox's wget cannot resolve addresses without NSS.
get='exec 3<>/dev/tcp/10.96.0.10/80 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && tail -n 1 <&3'
for i in $(seq 20); do
    ip netns exec client timeout 3 bash -c "$get"
done | sort | uniq -c
wait $vip_counter $backend_counter
cat /tmp/vip-counts /tmp/backend-counts

step "ipvsadm -Ln --stats (IPVS's own counters lag up to 2 s)"
sleep 2
ipvsadm -Ln --stats

step "libraflux apply again: nothing to do"
$libraflux apply -c $config

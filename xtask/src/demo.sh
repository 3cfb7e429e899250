# LibraFlux demo, run inside the VM by `cargo xtask demo` (bash, in the workspace directory).
set -euo pipefail
libraflux=target/debug/libraflux
step() { printf '\n=== %s\n' "$*"; }

step "kernel and IPVS"
uname -r
grep -E '^ip_vs' /proc/modules | cut -d' ' -f1 | tr '\n' ' '; echo
ipvsadm -Ln

step "a client and a backend in their own network namespaces, joined by veth"
ip netns add demo-client
ip netns add demo-backend
ip -n demo-client link add veth-c type veth peer name veth-b netns demo-backend
ip -n demo-client addr add 10.201.0.1/24 dev veth-c
ip -n demo-backend addr add 10.201.0.2/24 dev veth-b
for ns in demo-client demo-backend; do ip -n $ns link set lo up; done
ip -n demo-client link set veth-c up
ip -n demo-backend link set veth-b up

step "the eBPF counter on the backend's interface (netlink clsact on this 6.1 kernel), 40 UDP datagrams sent"
ip netns exec demo-backend $libraflux debug count-flows --interface veth-b \
    --watch udp:10.201.0.2:5300 --watch tcp:10.201.0.2:80 --duration 4s &
counter=$!
sleep 2
ip netns exec demo-client bash -c 'for i in $(seq 40); do echo "datagram $i" > /dev/udp/10.201.0.2/5300; done'
wait $counter

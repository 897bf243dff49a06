"""Who takes the CPU while TP traffic flows: the MLP block's GEMMs alone, then while a
thread on every rank moves the block's all-gather + reduce-scatter on uccl (40 of each),
then alone again; per phase the GEMM blocks per second, each thread's CPU (cores; `*` the
GEMM thread) and the machine's user/sys/softirq shares from /proc/stat.

    sudo .venv/bin/python -m uccl.launch.run --fabric hosts=2,leaves=2,spines=1,rate=100mbit,mtu=1500 \
        --nproc-per-node 1 perf/tp_cpu_share.py
"""
import os, time, threading, torch, torch.distributed as dist
from uccl.overlap._group import all_gather_single, reduce_scatter_single
TCK = os.sysconf("SC_CLK_TCK")
def threads():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = open(f"/proc/self/task/{tid}/comm").read().strip()
            f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            out[(tid, name)] = (int(f[11]) + int(f[12])) / TCK
        except OSError:
            pass
    return out
def cpustat():
    return [int(x) for x in open("/proc/stat").readline().split()[1:]]
torch.set_num_threads(1)
dist.init_process_group("uccl")
r = dist.get_rank()
me = threading.get_native_id()
x = torch.randn(512, 256); g = torch.empty(1024, 256); xs = torch.randn(1024, 256); s = torch.empty(512, 256)
a, w1, w2 = torch.randn(1024, 256), torch.randn(256, 8192) / 16, torch.randn(8192, 256) / 90
for _ in range(3): all_gather_single(g, x, dist.group.WORLD)
def phase(label, traffic):
    done = threading.Event()
    def comm():
        for _ in range(40):
            all_gather_single(g, x, dist.group.WORLD); reduce_scatter_single(s, xs, dist.group.WORLD)
        done.set()
    dist.barrier()
    t0, c0, s0 = time.perf_counter(), threads(), cpustat()
    th = threading.Thread(target=comm, name="comm") if traffic else None
    if th: th.start()
    n = 0
    while (not done.is_set()) if traffic else (time.perf_counter() - t0 < 4):
        torch.mm(torch.nn.functional.gelu(torch.mm(a, w1)), w2); n += 1
    wall = time.perf_counter() - t0
    if th: th.join()
    c1, s1 = threads(), cpustat()
    d = [b - a_ for a_, b in zip(s0, s1)]; tot = sum(d)
    per = {f"{k[1]}{'*' if int(k[0]) == me else ''}": round((c1[k] - c0.get(k, 0)) / wall, 2)
           for k in c1 if c1[k] - c0.get(k, 0) > 0.01}
    print(f"rank {r} {label}: {n / wall:.2f} GEMM blocks/s; thread CPU (cores) {per}; machine (2 cores): "
          f"user {d[0]/tot:.2f} sys {d[2]/tot:.2f} softirq {d[6]/tot:.2f} idle {d[3]/tot:.2f}", flush=True)
phase("compute alone", False)
phase("compute + AG/RS thread", True)
phase("compute alone", False)
dist.barrier()
dist.destroy_process_group()

"""ISNet inference with onnxruntime's CPU memory arena on vs off, side by side: time and peak memory.

Each side runs in a fresh ``spawn`` process, interleaved (on, off, on, off ...): one warm-up
inference, then the median of 4 timed ones on a 1x3x1024x1024 input, and the peak RSS growth
(VmHWM at the end minus VmRSS after the session). GRAPH is a translated graph from the onnx
backend's cache (``<cache>/onnx/<key>/model.onnx``), e.g. the one bench_evaluate.py writes:

    python benchmarks/bench_arena.py /tmp/bench_evaluate_cache/onnx/<key>/model.onnx
"""
import multiprocessing as mp, statistics, sys, time, os
import numpy as np

GRAPH = sys.argv[1]

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def child(arena, q):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    so.enable_cpu_mem_arena = arena
    s = ort.InferenceSession(GRAPH, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    before = status("VmRSS:")
    s.run(None, {name: x})
    times = []
    for _ in range(4):
        t = time.perf_counter(); out = s.run(None, {name: x}); times.append(time.perf_counter() - t)
    q.put((statistics.median(times), status("VmHWM:") - before, float(np.asarray(out[0]).sum())))
if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    res = {True: [], False: []}
    for _ in range(3):
        for arena in (True, False):
            q = ctx.Queue(); p = ctx.Process(target=child, args=(arena, q)); p.start(); r = q.get(); p.join()
            res[arena].append(r); print(arena, r, os.getloadavg()[0], flush=True)
    for arena in (True, False):
        print(f"arena {'on ' if arena else 'off'}: median s/inference {statistics.median(r[0] for r in res[arena]):.3f}, "
              f"peak growth MB {statistics.median(r[1] for r in res[arena]):.0f}")

"""How much does ``unitlens.recording`` cost on top of a bare forward pass, and how does it compare to SemanticLens?

What: on one set of images, decoded and transformed into in-memory batches *before* any timing (so image
loading is excluded), with one batch size, this times

1. ``bare``          ``model(batch)`` for every batch under ``torch.inference_mode``, no hooks;
2. ``ours``          the unitlens record computation on the same batches: forward hooks on every analysable
                     layer (``enumerate_units`` default), spatial mean, per-unit top-k *and* bottom-k
                     (k=200) with sample ids, plus running min/max/mean/std
                     (``unitlens.recording.recorder.Recorder`` staging each batch and folding it into ``LayerState``s);
3. ``semanticlens``  the ``semanticlens`` package's ``ActMaxCache`` (its documented API: ``hook_context`` around
                     the forward passes, ``aggregate_conv_mean``, ``n_collect=k``) on the same layers and
                     batches, under ``torch.no_grad`` as its ``ActivationComponentVisualizer`` runs it. It keeps
                     the top-k only (bfloat16 values, no bottom-k, no statistics).

Each variant gets one warm-up batch. The variants then take turns batch by batch (order rotated every batch;
each keeps its own top-k state across its batches, its hooks attached only around its own forward passes),
so that background load on a shared machine hits all three alike; a variant's time is the sum over the
batches, and the median over ``--repeats`` passes is reported, with the process CPU time beside it. The public
``unitlens.recording.record(...)`` call is also timed once end to end (with its own data loading, into a temp
dir) and reported separately as ``end-to-end``. Sanity checks: ours and SemanticLens agree on the top-1
sample (and top-k values, to bfloat16 precision) of the units, and the end-to-end atlas holds exactly the
exemplars of the in-memory run.

Why: recording must stay close to the price of the forward pass itself (target: record/bare <= 1.10).

Run (from the repository root):

    .venv/bin/python benchmarks/record_overhead.py --model efficientnet_lite0 --data demo --batch-size 32 --repeats 3

``--images N`` takes N images evenly spread over the dataset (default: all). On a 2-core CPU the forward pass
alone runs at roughly 5-10 images/s, so the whole demo set takes about half an hour there; add ``--images 96``
for a run of about 5 minutes (ours' deferred top-k merges, if any, are timed: they run in a final flush that
counts towards ours). On a machine shared with other jobs the wall-clock ratio at 2 threads swings widely
(see the noise-check line); ``--threads 1`` gives steady, comparable numbers there. ``--profile`` adds a split
of ours into forward / reduce / ``LayerState.update`` and the top ops.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unitlens.data import ImageDataset, load_dataset
from unitlens.recording import record
from unitlens.recording.defaults import MICRO_BATCH_CPU
from unitlens.recording.recorder import Recorder
from unitlens.recording.state import LayerState
from unitlens.zoo import enumerate_units, load_model

K_DEFAULT = 200


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--data", default="demo")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=None, help="number of images (evenly spread); default: all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--k", type=int, default=K_DEFAULT)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own). On a machine shared with other jobs, --threads 1 "
                        "makes the CPU-time ratio trustworthy (no OpenMP threads spinning for a descheduled peer)")
    p.add_argument("--micro-batch", type=int, default=None,
                   help="images per forward within a batch, for all three variants (default: record()'s, "
                        f"{MICRO_BATCH_CPU} on a CPU, the whole batch on an accelerator)")
    p.add_argument("--skip-end-to-end", action="store_true", help="do not time the public record() call")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="run every variant in NCHW instead of channels-last (record()'s default)")
    p.add_argument("--profile", action="store_true",
                   help="afterwards, split ours into forward / reduce / LayerState.update and list the top ops")
    return p.parse_args(argv)


def subsample(data: ImageDataset, n: int | None) -> ImageDataset:
    """``n`` images evenly spread over ``data`` (ids renumbered 0..n-1), or all of them."""
    if n is None or n >= len(data):
        return data
    sel = np.unique(np.linspace(0, len(data) - 1, n).round().astype(int))
    samples = data.samples.iloc[sel].drop(columns="id").reset_index(drop=True)
    return ImageDataset(samples, data.spec, data.transform)


def preload(data: ImageDataset, batch_size: int, device: torch.device, channels_last: bool = True):
    """Decode and transform every image once: a list of (images, ids) batches on ``device``."""
    xs, ids = [], []
    for i in range(len(data)):
        x, sid = data[i]
        if x is not None:
            xs.append(x)
            ids.append(sid)
    batches = []
    for s in range(0, len(xs), batch_size):
        images = torch.stack(xs[s:s + batch_size]).to(device)
        batches.append((images.contiguous(memory_format=torch.channels_last) if channels_last else images,
                        torch.tensor(ids[s:s + batch_size], dtype=torch.int64, device=device)))
    return batches, len(data) - len(xs)


def _load() -> str:
    """1-minute load average: other processes on the machine skew wall-clock ratios."""
    try:
        return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()} cores"
    except OSError:
        return "n/a"


def forward_in_slices(net, x: torch.Tensor, step: int | None) -> None:
    """``net`` over ``x`` in slices of ``step`` images, as ``Recorder.run`` does (None: the whole batch)."""
    step = step or len(x)
    for start in range(0, len(x), step):
        net(x[start:start + step])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_state(width: int, k: int, device, recorder) -> LayerState:
    merge_every = getattr(recorder, "merge_every", None)  # newer LayerState buffers merges
    return LayerState(width, k, device) if merge_every is None else LayerState(width, k, device, merge_every)


def flush_states(states: dict) -> None:
    """Fold buffered activations in (a LayerState with deferred merges does that work here)."""
    for st in states.values():
        if hasattr(st, "flush"):
            st.flush()


def exemplars(st: LayerState) -> dict[str, torch.Tensor]:
    """Sorted top/bottom values and ids of a LayerState (either layout: stored or decoded from keys)."""
    ex = st.exemplars() if hasattr(st, "exemplars") else {
        f: getattr(st, f) for f in ("top_ids", "top_vals", "bottom_ids", "bottom_vals")}
    return {f: v.cpu().long() if f.endswith("_ids") else v.cpu() for f, v in ex.items()}


# ---------------------------------------------------------------------------------------------- variants
class Bare:
    """``model(batch)`` under inference mode, no hooks."""

    def __init__(self, net, device, micro_batch):
        self.net, self.device, self.micro_batch = net, device, micro_batch

    def step(self, x, ids):
        with torch.inference_mode():
            forward_in_slices(self.net, x, self.micro_batch)
        sync(self.device)

    def finish(self):
        pass

    def result(self):
        return None


class Ours:
    """unitlens's record computation: ``Recorder`` hooks stage each batch, ``commit`` folds it into per-layer
    ``LayerState``s.

    The hooks are attached around each of this variant's forward passes only (the states carry over), so the
    three variants can take turns batch by batch on the one model.
    """

    def __init__(self, net, layers, k, device, micro_batch):
        self.net, self.layers, self.k, self.device, self.micro_batch = net, layers, k, device, micro_batch
        self.states = {}

    def step(self, x, ids):
        recorder = Recorder(self.net, self.layers, self.k, "mean", "mean", self.device, micro_batch=self.micro_batch)
        recorder.states = self.states
        try:
            with torch.inference_mode():
                recorder.run(self.net, x, ids)
                recorder.commit()
            sync(self.device)
        finally:
            recorder.close()

    def finish(self):
        """Deferred work: buffered merges still pending after the last batch (timed as part of ours)."""
        flush_states(self.states)
        sync(self.device)

    def result(self):
        return {name: {**exemplars(st), "count": int(st.count), "min": st.min.cpu(), "max": st.max.cpu()}
                for name, st in self.states.items()}


def semanticlens_aggregators(net, layers, x):
    """Pick SemanticLens's aggregation function for each layer from its output rank (probe forward)."""
    from semanticlens.component_visualization import aggregators

    def aggregate_identity(tensor):  # 2-D outputs (Linear): SemanticLens has no aggregator for them
        return tensor.detach().cpu()

    ranks, modules = {}, dict(net.named_modules())
    hooks = [modules[info.name].register_forward_hook(
        lambda _m, _i, o, name=info.name: ranks.__setitem__(name, (o[0] if isinstance(o, (tuple, list)) else o).ndim))
        for info in layers]
    try:
        with torch.inference_mode():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    by_rank = {4: aggregators.aggregate_conv_mean, 3: aggregators.aggregate_transformer_mean, 2: aggregate_identity}
    groups: dict = {}
    for info in layers:
        if ranks[info.name] not in by_rank:
            raise SystemExit(f"semanticlens: no aggregation function for a {ranks[info.name]}-D output ({info.name})")
        groups.setdefault(by_rank[ranks[info.name]], []).append(info.name)
    return groups


class SemanticLens:
    """SemanticLens's own API: one ``ActMaxCache`` per aggregation function, its ``hook_context`` around the
    forward passes (entered per batch here; its sample counter and top-k carry over), under ``torch.no_grad``
    as ``ActivationComponentVisualizer._run`` does."""

    def __init__(self, net, groups, k, device, micro_batch):
        from semanticlens.component_visualization.activation_caching import ActMaxCache

        self.net, self.device, self.micro_batch = net, device, micro_batch
        self.caches = [ActMaxCache(names, aggregation_fn=fn, n_collect=k) for fn, names in groups.items()]

    def step(self, x, ids):
        from contextlib import ExitStack

        with torch.no_grad(), ExitStack() as stack:
            for cache in self.caches:
                stack.enter_context(cache.hook_context(self.net))
            forward_in_slices(self.net, x, self.micro_batch)
        sync(self.device)

    def finish(self):
        pass

    def result(self):
        return {name: cache[name] for cache in self.caches for name in cache.layer_names}


class _TimedRecorder(Recorder):
    """``Recorder`` that also clocks its two parts per layer: reducing the output, and ``LayerState.update``."""

    def __init__(self, *args, **kwargs):
        self.clock: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)

    def _stage(self, name, inputs, output):
        t0 = time.perf_counter()
        super()._stage(name, inputs, output)
        sync(self.device)
        self.clock.setdefault(name, [0.0, 0.0])[0] += time.perf_counter() - t0

    def commit(self):
        for name, parts in self.staged.items():
            t0 = time.perf_counter()
            acts = torch.cat(parts)
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = new_state(acts.shape[1], self.k, self.device, self)
            state.update(acts, self.ids)
            sync(self.device)
            self.clock[name][1] += time.perf_counter() - t0
        self.staged.clear()


def profile_ours(net, batches, layers, k, device, bare_s: float, micro_batch: int | None) -> None:
    """Where does ours spend its time beyond the bare forward pass?"""
    from torch.profiler import ProfilerActivity, profile

    n = sum(len(ids) for _, ids in batches)
    recorder = _TimedRecorder(net, layers, k, "mean", "mean", device, micro_batch=micro_batch)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, ids in batches:
            recorder.run(net, x, ids)
            recorder.commit()
    t1 = time.perf_counter()
    flush_states(recorder.states)
    sync(device)
    t2 = time.perf_counter()
    total = t2 - t0
    recorder.close()
    red = sum(v[0] for v in recorder.clock.values())
    upd = sum(v[1] for v in recorder.clock.values()) + (t2 - t1)
    print(f"\nprofile of ours ({n} images, one pass): total {total:.2f} s = hooks' reduce_output {red:.2f} s "
          f"+ LayerState.update/flush {upd:.2f} s (final flush {t2 - t1:.2f} s) + the rest (forward) "
          f"{total - red - upd:.2f} s [bare median {bare_s:.2f} s]")
    print(f"  per batch of {batches[0][0].shape[0]}: reduce {red / len(batches):.3f} s, "
          f"update {upd / len(batches):.3f} s over {len(layers)} layers")
    worst = sorted(recorder.clock.items(), key=lambda kv: -sum(kv[1]))[:5]
    print("  costliest layers (reduce s, update s, width): " + "; ".join(
        f"{name} {r:.2f}/{u:.2f}/{recorder.states[name].width}" for name, (r, u) in worst))
    # per-op view: the forward's own ops vs the hooks' ops, in one pass at steady state (states kept)
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        recorder2 = Recorder(net, layers, k, "mean", "mean", device, micro_batch=micro_batch)
        recorder2.states = recorder.states
        for x, ids in batches[:2]:
            recorder2.run(net, x, ids)
            recorder2.commit()
        recorder2.close()
        flush_states(recorder2.states)
    print("  top ops over 2 more batches + a flush (forward and hooks together), by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


# ---------------------------------------------------------------------------------------------- checks
def check_against_semanticlens(states, sl_caches, stream_ids, layer_name, n_show=6):
    """Top-1 sample and top-k values of ours vs SemanticLens, per unit (SemanticLens: bfloat16, ties possible)."""
    lines = []

    def compare(name):
        st, am = states[name], sl_caches[name]
        kk = min(st["top_vals"].shape[1], am.activations.shape[1])
        sl_vals = am.activations[:, :kk].float().cpu()
        sl_pos = am.sample_ids[:, 0].cpu()
        sl_top1 = torch.where(sl_pos >= 0, stream_ids[sl_pos.clamp(min=0)], sl_pos)  # stream position -> id
        ours_top1 = st["top_ids"][:, 0]
        ours_vals = st["top_vals"][:, :kk]
        # SemanticLens starts every unit at 0.0 with id -1, so a unit whose activations stay <= 0 has no sample.
        positive = ours_vals[:, 0] > 0
        same = (ours_top1 == sl_top1) & positive
        # a different top-1 is a bfloat16 tie when its value rounds to the same bfloat16 as our top-1 value: our
        # value of that sample where our top-k holds it, else SemanticLens's own: a unit with more than k samples
        # tied at its maximum (a dead channel behind a batch norm) keeps the seeded draw of k of them, which need
        # not hold SemanticLens's pick
        tie = torch.zeros_like(same)
        for u in torch.nonzero(positive & ~same).flatten().tolist():
            hit = torch.nonzero(st["top_ids"][u] == sl_top1[u]).flatten()
            v = st["top_vals"][u, hit[0]].bfloat16() if len(hit) else sl_vals[u, 0].bfloat16()
            tie[u] = v == ours_vals[u, 0].bfloat16()
        # top-k values above 0 (SemanticLens's floor) must match ours rounded to bfloat16
        mask = ours_vals > 0
        val_err = ((ours_vals.bfloat16().float() - sl_vals).abs() * mask).max().item()
        return ours_top1, sl_top1, ours_vals[:, 0], sl_vals[:, 0], positive, same, tie, val_err

    ours_top1, sl_top1, ov, sv, positive, same, tie, val_err = compare(layer_name)
    units = torch.nonzero(positive).flatten()
    units = units[torch.linspace(0, len(units) - 1, min(n_show, len(units))).round().long()]
    lines.append(f"top-1 check on layer '{layer_name}' (units with a positive top activation):")
    lines.append(f"  {'unit':>5} {'ours id':>8} {'ours val':>10} {'sl id':>8} {'sl val(bf16)':>13}  agree")
    for u in units.tolist():
        agree = "yes" if same[u] else ("bf16 tie" if tie[u] else "NO")
        lines.append(f"  {u:>5} {int(ours_top1[u]):>8} {float(ov[u]):>10.4f} {int(sl_top1[u]):>8} "
                     f"{float(sv[u]):>13.4f}  {agree}")
    tot = {"units": 0, "positive": 0, "same": 0, "tie": 0, "err": 0.0}
    for name in states:
        *_, positive, same, tie, err = compare(name)
        tot["units"] += len(positive)
        tot["positive"] += int(positive.sum())
        tot["same"] += int(same.sum())
        tot["tie"] += int(tie.sum())
        tot["err"] = max(tot["err"], err)
    bad = tot["positive"] - tot["same"] - tot["tie"]
    lines.append(f"  all {len(states)} layers: {tot['positive']} of {tot['units']} units have a positive top "
                 f"activation; top-1 sample agrees on {tot['same']}, bf16 ties {tot['tie']}, disagrees {bad}; "
                 f"max |top-k value diff| (ours rounded to bf16, values > 0) = {tot['err']:.3g}")
    return lines, bad == 0


def check_ours(states, layers, n_images, k):
    problems = []
    for info in layers:
        st = states.get(info.name)
        if st is None:
            problems.append(f"{info.name}: no state")
            continue
        kk = min(k, n_images)
        if st["count"] != n_images or st["top_ids"].shape[1] != kk or st["bottom_ids"].shape[1] != kk:
            problems.append(f"{info.name}: count {st['count']}, top {st['top_ids'].shape[1]}, "
                            f"bottom {st['bottom_ids'].shape[1]}")
        elif not (torch.equal(st["max"], st["top_vals"][:, 0]) and torch.equal(st["min"], st["bottom_vals"][:, 0])):
            problems.append(f"{info.name}: top-1/bottom-1 values differ from running max/min")
    return problems


def check_end_to_end(atlas_dir: Path, states, layers) -> list[str]:
    from unitlens.atlas.files import read_tensors

    problems = []
    for info in layers:
        saved = read_tensors(atlas_dir / "exemplars" / f"{info.name}.safetensors")
        st = states[info.name]
        for f in ("top_ids", "bottom_ids"):
            if not torch.equal(saved[f].long(), st[f]):
                problems.append(f"{info.name}/{f}")
    return problems


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.perf_counter()

    loaded = load_model(args.model)
    net = loaded.model.to(device).eval()
    if args.channels_last:  # the same memory format for every variant, as record() uses by default
        net = net.to(memory_format=torch.channels_last)
    layers = enumerate_units(net)
    data = subsample(load_dataset(args.data, loaded.transform), args.images)
    t0 = time.perf_counter()
    batches, n_bad = preload(data, args.batch_size, device, args.channels_last)
    n = sum(len(ids) for _, ids in batches)
    stream_ids = torch.cat([ids for _, ids in batches]).cpu()
    print(f"model {args.model}: {len(layers)} analysable layers, "
          f"{sum(i.width or 0 for i in layers)} units; k={args.k}")
    print(f"data {args.data}: {n} images preloaded in {time.perf_counter() - t0:.1f} s "
          f"({n_bad} unreadable), {len(batches)} batches of <= {args.batch_size}; device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    groups = semanticlens_aggregators(net, layers, batches[0][0])
    micro_batch = args.micro_batch if args.micro_batch is not None else (
        MICRO_BATCH_CPU if device.type == "cpu" else None)
    print(f"forward in slices of {micro_batch or args.batch_size} images for every variant (record()'s default "
          f"on this device; --micro-batch to change)")
    load_before = _load()
    make = {
        "bare": lambda: Bare(net, device, micro_batch),
        "ours": lambda: Ours(net, layers, args.k, device, micro_batch),
        "semanticlens": lambda: SemanticLens(net, groups, args.k, device, micro_batch),
    }
    names = list(make)
    for name in names:  # warm-up: one batch each, on a throwaway instance
        make[name]().step(*batches[0])
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    pair = []  # ours / bare, batch by batch
    results = {}
    for r in range(args.repeats):
        runs = {name: make[name]() for name in names}
        wall = {name: [] for name in names}
        proc = {name: [] for name in names}
        for j, (x, ids) in enumerate(batches):
            for name in names[j % 3:] + names[:j % 3]:  # rotate the order, batch by batch
                t0, c0 = time.perf_counter(), time.process_time()
                runs[name].step(x, ids)
                wall[name].append(time.perf_counter() - t0)
                proc[name].append(time.process_time() - c0)
            pair.append(wall["ours"][-1] / wall["bare"][-1])
        for name in names:  # deferred work after the last batch
            t0, c0 = time.perf_counter(), time.process_time()
            runs[name].finish()
            wall[name].append(time.perf_counter() - t0)
            proc[name].append(time.process_time() - c0)
        for name in names:
            times[name].append(sum(wall[name]))
            cpu[name].append(sum(proc[name]))
            results[name] = runs[name].result()
        print(f"  repeat {r + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in names), flush=True)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}

    e2e = None
    if not args.skip_end_to_end:
        with tempfile.TemporaryDirectory(prefix="unitlens-bench-") as tmp:
            t0 = time.perf_counter()
            res = record(loaded, data, Path(tmp) / "atlas", layers=layers, k=args.k,
                         batch_size=args.batch_size, device=device, channels_last=args.channels_last,
                         micro_batch=micro_batch,
                         force=True, progress=False)
            wall = time.perf_counter() - t0
            e2e_problems = check_end_to_end(Path(tmp) / "atlas", results["ours"], layers)
        e2e = (res.seconds, res.n_images - res.n_skipped, wall)

    print()
    print(f"{'variant':<14} {'seconds':>8} {'images/s':>9} {'vs bare':>8} {'cpu s':>8} {'cpu vs bare':>11}")
    for name in names:
        print(f"{name:<14} {med[name]:>8.2f} {n / med[name]:>9.1f} {med[name] / med['bare']:>8.2f} "
              f"{med_cpu[name]:>8.2f} {med_cpu[name] / med_cpu['bare']:>11.2f}")
    if e2e is not None:
        secs, n_e2e, wall = e2e
        print(f"{'end-to-end':<14} {secs:>8.2f} {n_e2e / secs:>9.1f} {secs / med['bare']:>8.2f}"
              f"   (public record(): data loading + hooks; {wall:.1f} s with setup and atlas writing)")
    print(f"(median of {args.repeats} over {n} images, batch size {args.batch_size}; "
          f"ours = top-{args.k} + bottom-{args.k} + stats, semanticlens = top-{args.k} only, bfloat16)")
    print()
    print(f"record/bare ratio = {med['ours'] / med['bare']:.2f} (target <= 1.10)")
    print(f"  (noise check: fastest-repeat ratio {min(times['ours']) / min(times['bare']):.2f}; batch-by-batch "
          f"ours/bare median {statistics.median(pair):.2f}, range {min(pair):.2f}-{max(pair):.2f}; CPU-time ratio "
          f"{med_cpu['ours'] / med_cpu['bare']:.2f}; load average {load_before} before, {_load()} after)")
    print(f"semanticlens/ours = {med['semanticlens'] / med['ours']:.2f}")
    print()

    ok = True
    problems = check_ours(results["ours"], layers, n, args.k)
    print(f"ours: {len(layers)} layers, count/top-k/bottom-k shapes and top-1 == max, bottom-1 == min: "
          + ("ok" if not problems else "PROBLEMS " + "; ".join(problems[:5])))
    ok &= not problems
    mid = layers[len(layers) // 2].name
    lines, sl_ok = check_against_semanticlens(results["ours"], results["semanticlens"], stream_ids, mid)
    print("\n".join(lines))
    ok &= sl_ok
    if e2e is not None:
        print("end-to-end atlas top/bottom ids == in-memory run: "
              + ("ok" if not e2e_problems else f"DIFFER in {len(e2e_problems)}: {e2e_problems[:5]}"))
        ok &= not e2e_problems
    if args.profile:
        profile_ours(net, batches, layers, args.k, device, med["bare"], micro_batch)
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel groups and expert parallelism: LLMServingSim's ``dp_group``/``ep_size`` and vLLM's
``data_parallel_size``/``enable_expert_parallel`` resolved into a ParallelLayout per instance, vLLM's
expert placement, every bad combination as one line, and MoE memory per GPU by hand."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from conftest import read_csv_rows, run_subprocess, shared_path, write_trace
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.build import engine_for
from tpsim.config.cluster import load_cluster, parse_cluster
from tpsim.config.engine import DEFAULTS
from tpsim.config.hardware import load_hardware
from tpsim.config.model import load_model
from tpsim.config.parallel import ParallelLayout, resolve_layouts
from tpsim.io.summary import SCHEMA_PATH
from tpsim.memory import plan_memory, pp_stages
from tpsim.report import layout_lines
from tpsim.units import GB, GiB

MOE = "Qwen/Qwen3-30B-A3B-Instruct-2507"
SHARED_RUN = ("validation", "rtxpro6000-qwen3-30b-a3b-dp2-ep2")


def instance(**over) -> dict:
    inst = {"model_name": MOE, "hardware": "RTXPRO6000",
            "npu_mem": {"mem_size": 96, "mem_bw": 1597, "mem_latency": 0, "mem_util": 0.9},
            "num_npus": 1, "tp_size": 1, "pd_type": None}
    inst.update(over)
    return inst


def cluster(*instances: dict) -> dict:
    return {"num_nodes": 1, "link_bw": 16, "link_latency": 20000,
            "nodes": [{"num_instances": len(instances), "cpu_mem": {"mem_size": 512, "mem_bw": 256, "mem_latency": 0},
                       "instances": list(instances)}]}


#: LLMServingSim's description of the shared real run (vLLM 0.19, DP=2 with EP on two RTX PRO 6000)
DP2_EP2 = cluster(instance(ep_size=2, dp_group="A"), instance(ep_size=2, dp_group="A"))


def layouts_of(doc: dict):
    c = parse_cluster(doc, "c.json")
    return c, resolve_layouts(c.instances, [load_model(i.model_name) for i in c.instances], c.path)


# ----------------------------------------------------------------------------- placement
def test_linear_placement_gives_the_first_ranks_one_more():
    """vLLM's determine_expert_map: E=10 over 4 EP ranks -> 3, 3, 2, 2 contiguous experts."""
    lay = ParallelLayout(0, 1, 1, 4, 0, "g", (0, 1, 2, 3), 4, 10)
    assert [list(lay.experts_of(r)) for r in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


@settings(max_examples=200, deadline=None)
@given(experts=st.integers(1, 300), dp=st.integers(1, 8), tp=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_every_expert_on_exactly_one_ep_rank_and_every_gpu_on_one(experts, dp, tp, data):
    world = dp * tp
    ep = data.draw(st.sampled_from([d for d in range(1, world + 1) if world % d == 0]))
    ranks = [ParallelLayout(r, tp, 1, dp, r, "g", tuple(range(dp)), ep, experts) for r in range(dp)]
    owned = [list(ranks[0].experts_of(e)) for e in range(ep)]
    assert [x for o in owned for x in o] == list(range(experts))  # disjoint, contiguous, complete, in rank order
    sizes = [len(o) for o in owned]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # the first E % ep get one more
    gpus = [r for lay in ranks for r in lay.ep_ranks]  # EP rank of every GPU of the group, DP-major
    assert gpus == sorted(gpus) and set(gpus) == set(range(ep))
    assert all(gpus.count(e) == world // ep == ranks[0].expert_tp for e in range(ep))
    assert sum(len(r) for lay in ranks for r in lay.local_experts) == experts * (world // ep)


# ----------------------------------------------------------------------------- resolution
def test_llmservingsim_dp_group_resolves_to_vllms_dp2_ep2_layout():
    c, (layouts, notes) = layouts_of(DP2_EP2)
    assert notes == []
    a, b = layouts
    assert (a.dp_group, a.group, a.dp_size, a.ep_size, a.ep_source) == ("A", (0, 1), 2, 2, "ep_size")
    assert (a.dp_rank, b.dp_rank) == (0, 1) and (a.ep_ranks, b.ep_ranks) == ((0,), (1,))
    assert a.local_experts == (range(0, 64),) and b.local_experts == (range(64, 128),)
    assert a.expert_parallel and a.lockstep and a.expert_tp == 1 and a.moe_world == 2
    assert a.as_dict() == {"dp_group": "A", "dp_size": 2, "dp_rank": 0, "group_instances": [0, 1], "ep_size": 2,
                           "ep_source": "ep_size", "expert_parallel": True, "expert_tp": 1, "ep_ranks": [0],
                           "experts_per_gpu": [64], "lockstep": True}
    parallel = json.loads(SCHEMA_PATH.read_text())["properties"]["instances"]["items"]["properties"]["parallel"]
    for lay in (a, b):
        jsonschema.Draft202012Validator(parallel).validate(lay.as_dict())


def test_the_shared_llmservingsim_config_parses_unchanged():
    path = shared_path(*SHARED_RUN, "config.json")
    c = load_cluster(path)
    layouts, _ = resolve_layouts(c.instances, [load_model(i.model_name) for i in c.instances], c.path)
    assert [(x.dp_rank, x.ep_size, x.max_local_experts) for x in layouts] == [(0, 2, 64), (1, 2, 64)]
    assert c.unknown_keys == ()


def test_vllm_spelling_expands_to_one_instance_per_dp_rank():
    native = cluster(instance(data_parallel_size=2, enable_expert_parallel=True),
                     instance(model_name="Qwen/Qwen3-0.6B"))
    c, (layouts, _) = layouts_of(native)
    assert [(i.index, i.entry) for i in c.instances] == [(0, "nodes[0].instances[0]"), (1, "nodes[0].instances[0]"),
                                                         (2, "nodes[0].instances[1]")]
    a, b, dense = layouts
    _, (llmss, _) = layouts_of(DP2_EP2)
    fields = ("dp_size", "dp_rank", "group", "ep_size", "local_experts", "lockstep")
    assert [[getattr(x, f) for f in fields] for x in (a, b)] == [[getattr(x, f) for f in fields] for x in llmss]
    assert a.ep_source == "enable_expert_parallel" and dense.plain and dense.group == (2,)


def test_ep_off_shards_every_expert_by_width_over_dp_x_tp():
    _, ([a, b], _) = layouts_of(cluster(instance(data_parallel_size=2, enable_expert_parallel=False, tp_size=2,
                                                 num_npus=2)))
    assert (a.ep_size, a.expert_parallel, a.expert_tp, a.moe_world) == (1, False, 4, 4)
    assert a.local_experts == b.local_experts == (range(128), range(128)) and a.lockstep


def test_llmservingsim_default_ep_is_tp_and_partial_ep_splits_width():
    _, ([solo], _) = layouts_of(cluster(instance(tp_size=2, num_npus=2)))
    assert (solo.ep_size, solo.ep_source, solo.expert_tp, solo.ep_ranks) == (2, "default", 1, (0, 1))
    # ep_size 2 over dp 2 x tp 2: one EP rank per instance, each expert split over its 2 TP GPUs
    _, ([a, b], _) = layouts_of(cluster(*[instance(tp_size=2, num_npus=2, ep_size=2, dp_group="g")] * 2))
    assert (a.expert_tp, a.ep_ranks, b.ep_ranks) == (2, (0, 0), (1, 1))
    assert a.local_experts == (range(64), range(64))


def test_uneven_experts_with_vllms_flag():
    """Mixtral's 8 experts over 3 DP ranks (EP on): 3, 3, 2 as vLLM places them."""
    doc = cluster(instance(model_name="mistralai/Mixtral-8x7B-v0.1", data_parallel_size=3, enable_expert_parallel=True))
    _, (layouts, _) = layouts_of(doc)
    assert [x.local_experts for x in layouts] == [(range(0, 3),), (range(3, 6),), (range(6, 8),)]


def test_dense_dp_group_is_independent_and_ep_size_is_noted_as_moot(tmp_path):
    dense = dict(model_name="Qwen/Qwen3-0.6B", dp_group="d", ep_size=2)
    _, (layouts, notes) = layouts_of(cluster(instance(**dense), instance(**dense)))
    assert [(x.ep_size, x.lockstep, x.dp_rank) for x in layouts] == [(1, False, 0), (1, False, 1)]
    assert notes == ["c.json: nodes[0].instances[0].ep_size ignored: Qwen/Qwen3-0.6B is dense (no experts to place); "
                     "EP 1", "c.json: nodes[0].instances[1].ep_size ignored: Qwen/Qwen3-0.6B is dense (no experts to "
                     "place); EP 1"]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(cluster(instance(**dense), instance(**dense))))
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 30, "output_toks": 4, "arrival_time_ns": i * 1000}
                                               for i in range(6)])
    out = tmp_path / "o" / "run.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(out), "--perf-model", "analytical"])
    assert proc.returncode == 0, proc.stderr
    assert "DP rank 1 of 2 (dp_group 'd': instances 0, 1; dense: independent engines)" in proc.stdout
    assert {r["instance id"] for r in read_csv_rows(out)} == {"0", "1"}
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(summary)
    assert [s["parallel"]["dp_rank"] for s in summary["instances"]] == [0, 1]
    assert summary["ignored"][-2:] == [note.replace("c.json", str(cfg), 1) for note in notes]


def test_a_plain_dense_instance_has_no_parallel_block():
    _, ([lay], _) = layouts_of(cluster(instance(model_name="Qwen/Qwen3-0.6B")))
    assert lay.plain and lay.ep_size == 1 and lay.local_experts == () and not lay.lockstep


# ----------------------------------------------------------------------------- bad combinations
BAD = [
    ("ep > tp without dp_group", [instance(ep_size=2)],
     "nodes[0].instances[0].ep_size: ep_size (2) > tp_size (1) needs a dp_group"),
    ("members disagree on tp",
     [instance(dp_group="A", ep_size=2), instance(dp_group="A", ep_size=2, tp_size=2, num_npus=2)],
     "nodes[0].instances[1].tp_size: dp_group 'A' members disagree on tp_size "
     "(1 in nodes[0].instances[0], 2 here)"),
    ("members disagree on model",
     [instance(dp_group="A", ep_size=2), instance(dp_group="A", ep_size=2, model_name="Qwen/Qwen3-30B-A3B")],
     "nodes[0].instances[1].model_name: dp_group 'A' members disagree on model_name"),
    ("members disagree on hardware",
     [instance(dp_group="A", ep_size=2), instance(dp_group="A", ep_size=2, hardware="H100")],
     "nodes[0].instances[1].hardware: dp_group 'A' members disagree"),
    ("members disagree on ep", [instance(dp_group="A", ep_size=2), instance(dp_group="A")],
     "nodes[0].instances[1].ep_size: dp_group 'A' members disagree on ep_size "
     "(2 in nodes[0].instances[0], absent here)"),
    ("members disagree on pp",
     [instance(dp_group="A", ep_size=2), instance(dp_group="A", ep_size=2, pp_size=2, num_npus=2)],
     "nodes[0].instances[1].pp_size: dp_group 'A' members disagree on pp_size"),
    ("default ep not a multiple of the group", [instance(dp_group="A")] * 2,
     "nodes[0].instances[0].ep_size: ep_size (1, by default tp_size) "
     "must be a multiple of the 2 DP ranks of dp_group 'A'"),
    ("ep not a multiple of the group", [instance(dp_group="A", ep_size=3)] * 2,
     "ep_size (3) must be a multiple of the 2 DP ranks"),
    ("ep per rank > tp", [instance(dp_group="A", ep_size=4)] * 2,
     "nodes[0].instances[0].ep_size: ep_size (4) over 2 DP ranks is 2 EP ranks per instance, "
     "more than its tp_size (1)"),
    ("ep not dividing experts", [instance(model_name="mistralai/Mixtral-8x7B-v0.1", dp_group="A", ep_size=3)] * 3,
     "ep_size (3) does not divide mistralai/Mixtral-8x7B-v0.1's 8 experts; no ep_size fits this group"),
    ("ep not dividing the group's GPUs", [instance(dp_group="A", ep_size=4, tp_size=3, num_npus=3)] * 2,
     "ep_size (4) does not divide the group's 6 GPUs (dp 2 x tp_size 3)"),
    ("expert width over dp x tp", [instance(data_parallel_size=5, enable_expert_parallel=False)],
     "nodes[0].instances[0].enable_expert_parallel: each expert's width 768 of Qwen/Qwen3-30B-A3B-Instruct-2507 "
     "would be split over 5 GPUs"),
    ("two spellings of EP", [instance(ep_size=1, enable_expert_parallel=True)],
     "nodes[0].instances[0]: 'ep_size' and 'enable_expert_parallel' both given"),
    ("two spellings of DP", [instance(dp_group="A", data_parallel_size=2)],
     "nodes[0].instances[0]: 'dp_group' and 'data_parallel_size' both given"),
    ("flag not a boolean", [instance(enable_expert_parallel="true")],
     "nodes[0].instances[0].enable_expert_parallel must be true or false"),
    ("zero DP ranks", [instance(data_parallel_size=0)], "nodes[0].instances[0].data_parallel_size must be >= 1"),
    ("ep_size zero", [instance(ep_size=0)], "nodes[0].instances[0].ep_size must be >= 1"),
    ("dp_group a number", [instance(dp_group=5)], "nodes[0].instances[0].dp_group must be a non-empty string"),
    ("reserved group name",
     [instance(data_parallel_size=2), instance(dp_group="data_parallel_size@nodes[0].instances[0]")],
     "nodes[0].instances[1].dp_group 'data_parallel_size@nodes[0].instances[0]': names starting with"),
]


@pytest.mark.parametrize("label,instances,message", BAD, ids=[b[0] for b in BAD])
def test_bad_parallel_combinations_are_one_line_naming_instance_and_key(tmp_path, label, instances, message):
    cfg = tmp_path / "cluster.json"
    cfg.write_text(json.dumps(cluster(*instances)))
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0}])
    out = tmp_path / "out" / "run.csv"
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(out)])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"tpsim: error: {cfg}") and message in lines[0], lines[0]
    assert not out.exists() and not out.with_suffix(".summary.json").exists()


def test_the_shared_moe_run_runs_and_a_too_small_gpu_still_stops_at_its_memory(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(DP2_EP2))
    trace = write_trace(tmp_path / "t.jsonl", [{"input_toks": 20, "output_toks": 5, "arrival_time_ns": 0}])
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(tmp_path / "o.csv")])
    assert proc.returncode == 0, proc.stderr
    assert [r["request id"] for r in read_csv_rows(tmp_path / "o.csv")] == ["0"]
    small = cluster(*[instance(ep_size=2, dp_group="A", npu_mem={"mem_size": 24, "mem_bw": 1597})] * 2)
    cfg.write_text(json.dumps(small))
    proc = run_subprocess(["-m", "tpsim", "run", "--cluster-config", str(cfg), "--dataset", str(trace),
                           "--output", str(tmp_path / "o2.csv")])
    assert proc.returncode == 2 and "does not fit" in proc.stderr and "64 of 128 experts per GPU" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "o2.csv").exists()


# ----------------------------------------------------------------------------- memory by hand
def _shared_case():
    """The shared run's instance 0: Qwen3-30B-A3B-Instruct-2507, DP=2 + EP=2, one RTX PRO 6000 (96 GiB) per rank,
    mem_util 0.9, vLLM's engine arguments of that run (max_num_seqs 128, max_num_batched_tokens 2048, bf16)."""
    model = load_model(MOE)
    _, ([layout, _], _) = layouts_of(DP2_EP2)
    engine = engine_for(model, {**DEFAULTS, "max_num_seqs": 128, "max_num_batched_tokens": 2048}, {}, 0.9, "t")
    reserve_gib = load_hardware("RTXPRO6000").perf.activation_reserve_gib
    return model, layout, engine, plan_memory(model, 1, 1, engine, 96, reserve_gib, "t", layout), reserve_gib


def test_moe_memory_per_gpu_by_hand_for_the_shared_dp2_ep2_case():
    model, layout, engine, plan, reserve_gib = _shared_case()
    h, v, layers, e, i, k = 2048, 151936, 48, 128, 768, 8  # hidden, vocab, layers, experts, expert width, top-k
    q, kv, hd = 32 * 128, 4 * 128, 128
    b = 2  # bf16
    attention = (h * (q + 2 * kv) + q * h) * b  # TP 1: the whole attention on each DP rank
    norms = (2 * h + 2 * hd) * b  # two RMSNorms and Qwen3's q/k norms
    router = h * e * b  # replicated on every GPU
    experts = (e // 2) * 3 * h * i * b  # EP 2: 64 whole experts on this GPU
    embedding = lm_head = v * h * b  # untied; both on each DP rank
    weights = layers * (attention + norms + router + experts) + embedding + lm_head + h * b
    assert weights == 32_073_216_000
    assert plan.weights_bytes == weights
    assert plan.experts.as_dict() == {"experts_per_gpu": 64, "num_experts": 128, "width_per_gpu": 768, "width": 768,
                                      "moe_layers": 48, "weights_gb": round(layers * experts / GB, 4)}
    # profiling forward: 2048 tokens per rank, all-gathered to M = 2 x 2048 rows for the fused-MoE kernel
    n, m = 2048, 2 * 2048
    forward = n * b * (4 * h + q + 2 * kv) + b * (m * k * (max(i, h) + max(2 * i, h)) + m * h + m * (h + e) + n * e)
    sampler = 128 * v * 4 * 2
    assert plan.activation_bytes == max(forward, sampler) == 358_088_704
    budget = int(96 * GiB * 0.9)
    per_token = 2 * kv * layers * b  # the KV cache is per DP rank, TP 1
    assert plan.kv_bytes_per_token == per_token == 98_304
    blocks = (budget - weights - plan.activation_bytes - int(reserve_gib * GiB)) // (16 * per_token)
    assert plan.num_blocks == blocks == 37_509 and plan.kv_capacity_tokens == 600_144


def test_weights_agree_with_llmservingsims_kv_banner_for_the_shared_run():
    """LLMServingSim (no activation or reserve term) printed 38,590 blocks per rank for this run: with tpsim's
    weights, budget - weights holds exactly that many 16-token blocks."""
    log = shared_path(*SHARED_RUN, "llmservingsim", "sim.log").read_text()
    blocks = [int(x.replace(",", "")) for x in re.findall(r"Instance \[\d\] : \d+ tokens / (\d+) blocks", log)]
    _, _, _, plan, _ = _shared_case()
    assert blocks == [(int(96 * GiB * 0.9) - plan.weights_bytes) // (16 * plan.kv_bytes_per_token)] * 2 == [38_590] * 2


def test_ep_off_and_ep_on_hold_the_same_expert_bytes_but_different_shapes():
    model = load_model(MOE)
    engine = engine_for(model, dict(DEFAULTS), {}, 0.9, "t")
    _, ([on, _], _) = layouts_of(cluster(instance(data_parallel_size=2, enable_expert_parallel=True)))
    _, ([off, _], _) = layouts_of(cluster(instance(data_parallel_size=2, enable_expert_parallel=False)))
    p_on, p_off = (plan_memory(model, 1, 1, engine, 96, 1.25, "t", lay) for lay in (on, off))
    assert p_on.weights_bytes == p_off.weights_bytes and p_on.experts.bytes == p_off.experts.bytes
    assert (p_on.experts.experts_per_gpu, p_on.experts.width_per_gpu) == (64, 768)
    assert (p_off.experts.experts_per_gpu, p_off.experts.width_per_gpu) == (128, 384)
    single = plan_memory(model, 1, 1, engine, 96, 1.25, "t")  # no DP: all 128 experts on the one GPU
    assert single.weights_bytes - p_on.weights_bytes == p_on.experts.bytes


def test_pipeline_stages_follow_vllms_partition():
    assert pp_stages(48, 1) == [range(0, 48)]
    assert pp_stages(10, 4) == [range(0, 2), range(2, 5), range(5, 8), range(8, 10)]  # [2, 3, 3, 2]
    assert pp_stages(5, 4) == [range(0, 1), range(1, 2), range(2, 4), range(4, 5)]  # the remainder before the last
    model = load_model(MOE)
    engine = engine_for(model, dict(DEFAULTS), {}, 0.9, "t")
    one, two = (plan_memory(model, 1, pp, engine, 96, 1.25, "t") for pp in (1, 2))
    layer = (one.weights_bytes - 2 * 151936 * 2048 * 2 - 2048 * 2) // 48
    assert two.weights_bytes == 24 * layer + 151936 * 2048 * 2 + 2048 * 2  # the last stage: LM head and final norm


def test_dense_memory_is_unchanged_by_a_layout():
    model = load_model("Qwen/Qwen3-8B")
    engine = engine_for(model, dict(DEFAULTS), {}, 0.9, "t")
    _, ([a, _], _) = layouts_of(cluster(*[instance(model_name="Qwen/Qwen3-8B", dp_group="d")] * 2))
    assert plan_memory(model, 1, 1, engine, 96, 1.25, "t", a) == plan_memory(model, 1, 1, engine, 96, 1.25, "t")


def test_banner_says_which_experts_are_on_the_gpu():
    _, layout, _, plan, _ = _shared_case()
    assert layout_lines(layout, plan) == [
        "  DP rank 0 of 2 (dp_group 'A': instances 0, 1; MoE layers in lockstep); attention, embedding and LM head on "
        "each DP rank (TP 1), KV cache per DP rank",
        f"  experts 64 of 128 on this GPU at width 768 of 768 (EP 2 over DP 2 x TP 1; ep_size): "
        f"{plan.experts.bytes / GB:.2f} GB of the weights; routers replicated",
    ]

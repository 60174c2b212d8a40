"""`tessera bench protocol`: the board's reliability and link budget, one runner per part."""

from __future__ import annotations

import argparse

from .common import (NO_PROGRESS, default_tsr, emit, positive_float, positive_int, progress_bar,
                     stage)

__all__ = ["cmd_bench_protocol", "register_bench_protocol", "PARTS"]


def _part_fuzz(args, model: str, pb) -> tuple[dict, str]:
    stage(args, f"fuzzing the firmware with {args.frames} frames ...")
    f = pb.fuzz(model, frames=args.frames)
    line = (f"fuzz: {f['frames']} frames ({f['mutated']} mutated): {f['crashes']} crashes, "
            f"{f['internal_errors']} internal errors, {f['hangs']} hangs, "
            f"{f['unanswered']} unanswered; worst {f['worst_frame_ms']} ms")
    return f, line


def _part_structured(args, model: str, pb) -> tuple[dict, str]:
    from tessera.tools.structured_fuzz import fuzz_structured

    if args.board == "process":
        from tessera.tools.structured_fuzz import fuzz_structured_process

        stage(args, f"structure-aware fuzzing (Hypothesis), {args.examples} bodies to a "
                     "simulator in its own process ...")
        f = fuzz_structured_process(
            model, examples=args.examples, seed=args.seed,
            on_chunk=lambda c: stage(args, f"  {c['examples']} bodies, {c['seconds']} s, "
                                            f"{len(c['failures'])} failures, board "
                                            f"{c['board_rss_mb'][-1]} MB"))
    else:
        stage(args, f"structure-aware fuzzing (Hypothesis), {args.examples} bodies ...")
        f = fuzz_structured(model, examples=args.examples, seed=args.seed)
    line = (f"structure-aware fuzz: {f['examples']} bodies in {f['seconds']} s, "
            f"{len(f['failures'])} failures"
            + (f" (first: {f['failures'][0]})" if f["failures"] else "")
            + "; answers " + ", ".join(f"{k} {v}" for k, v in
                                      sorted(f["answers"].items())))
    return f, line


def _part_flash_images(args, model: str, pb) -> tuple[dict, str]:
    from tessera.tools.structured_fuzz import fuzz_flash_images

    n = min(args.examples, 10_000)
    stage(args, f"mutated flash images (Hypothesis), {n} ...")
    f = fuzz_flash_images(model, examples=n)
    line = (f"mutated flash images: {f['examples']} in {f['seconds']} s, booted with "
            f"their model {f['booted_with_model']}, empty and saying why "
            f"{f['booted_empty']}, {len(f['failures'])} failures"
            + (f" (first: {f['failures'][0]})" if f["failures"] else ""))
    return f, line


def _part_lossy(args, model: str, pb) -> tuple[dict, str]:
    stage(args, f"enrolling {args.words} words over a lossy link ...")
    x = pb.lossy_enroll(model, words=args.words)
    line = (f"lossy link ({100 * x['drop']:.1f} % dropped + {100 * x['corrupt']:.1f} % "
            f"corrupted bytes): {x['enrollments_on_device']} of {x['words']} enrollments "
            f"landed, exactly once: {x['exactly_once']} ({x['retries']} retries)")
    return x, line


def _part_lossy_stream(args, model: str, pb) -> tuple[dict, str]:
    stage(args, "1 s utterances over a link that damages 1 % of the bytes ...")
    x = pb.lossy_stream(model)
    lo = x["lossy"]
    line = (f"1 % byte errors at {x['baud']} baud: a 1 s utterance (spikes, version 4) "
            f"in {lo['spikes_1s_seconds']} s (clean link "
            f"{x['clean']['spikes_1s_seconds']} s), audio {lo['audio_seconds_per_s']}"
            f" s per second; version 3: spikes {lo['v3_spikes_seconds_per_s']}, audio "
            f"{lo['v3_audio_seconds_per_s']} s per second; version 2: spikes "
            f"{lo['v2_spikes_seconds_per_s']}, audio {lo['v2_audio_seconds_per_s']} s per "
            f"second; the answer equals the clean link's: "
            f"{x['lossy_answer_equals_clean']}")
    return x, line


def _part_kill(args, model: str, pb) -> tuple[dict, str]:
    stage(args, f"killing the device {args.kills} times during a save ...")
    k = pb.kill_during_save(model, kills=args.kills)
    line = (f"SIGKILL during save x{k['kills']}: {k['images_loaded']} images loaded, "
            f"{k['corrupt']} corrupt")
    return k, line


def _part_enroll_kills(args, model: str, pb) -> tuple[dict, str]:
    from tessera.tools.enroll_kills import enroll_kills

    stage(args, f"killing the board {args.kills} times during enrollments ...")
    k = enroll_kills(model, kills=args.kills, seed=args.seed)
    line = (f"SIGKILL during enrollments x{k['kills']} ({k['enrollments']} answered, "
            f"{k['storage_refusals']} flash writes failed and refused): {k['doubled']} doubled, "
            f"{k['lost']} lost")
    return k, line


def _part_link(args, model: str, pb) -> tuple[dict, str]:
    stage(args, "link budget ...")
    b = pb.link_budget(model)
    line = (f"link budget at {b['baud']} baud: spikes (700 ch, events) "
            f"{b['spikes_700ch_events_bytes_per_s']} B/s ({b['spikes_700ch_events_headroom']}x"
            f" headroom), bitmap {b['spikes_700ch_bitmap_bytes_per_s']} B/s; audio "
            f"{b['audio_bytes_per_s']} B/s ({b['audio_headroom']}x)")
    return b, line


def _part_flood(args, model: str, pb) -> tuple[dict, str]:
    stage(args, "5 MB of garbage into tessera sim --pty ...")
    g = pb.garbage_flood()
    after = g["answer_after_flood_s"]
    line = (f"garbage flood ({g['megabytes']:g} MB of random bytes over a pty, "
            f"{g['flood_s']} s): a request right after it answered in "
            + (f"{1000 * after:.0f} ms" if after is not None else "-- never --")
            + f"; {g['answer_bytes']} bytes of answers")
    return g, line


def _part_models(args, model: str, pb) -> tuple[dict, str]:
    stage(args, f"{args.mutants} mutated model files through the chip and the board ...")
    from tessera.tools.model_fuzz import fuzz_models

    bar = progress_bar(args.mutants, args)
    m = fuzz_models(model, count=args.mutants,
                                      progress=lambda i: bar.update(1))
    bar.close()
    line = (f"mutated model files x{m['mutants']}: chip {m['chip_loaded']} loaded and "
            f"ran, {m['chip_rejected']} rejected with a named error, "
            f"{m['chip_crashes']} crashes, {m['chip_hangs']} hangs; board "
            f"{m['board_accepted']} accepted, {m['board_rejected']} refused, "
            f"{m['board_crashes']} crashes, {m['board_lost_model']} times without a "
            f"working model; slowest {m['worst_mutant_ms']} ms")
    return m, line


def _part_stream(args, model: str, pb) -> tuple[dict, str]:
    stage(args, f"{args.minutes:g} minutes of audio through the chip and tessera sim --pty "
                 f"...")
    from tessera.tools.long_stream import long_stream

    st = long_stream(model, minutes=args.minutes)
    c, b = st["chip"], st["board"]
    line = (f"{st['minutes']:g}-minute stream ({st['blocks']} identical blocks): chip "
            f"RSS {c['rss_start_mb']} -> {c['rss_end_mb']} MB, answers identical in "
            f"every block: {c['answers_identical_every_block']}; board over a pty RSS "
            f"{b['rss_start_mb']} -> {b['rss_end_mb']} MB, right detections per block "
            f"{b['right_per_block_first_quarter']} (first quarter) -> "
            f"{b['right_per_block_last_quarter']} (last) of {b['taught_per_block']} "
            f"taught bursts, no drift: {b['no_drift']} ({b['seconds']} s)")
    return st, line


def _part_pty(args, model: str, pb) -> tuple[dict, str]:
    stage(args, "enroll round trips over a pty ...")
    p = pb.pty_enroll(model)
    line = (f"pty: enroll round trip {p['enroll_round_trip_ms']} ms, ping "
            f"{p['ping_round_trip_ms']} ms, 1 s utterance streamed in "
            f"{p['stream_1s_utterance_ms']} ms")
    return p, line


def _part_hostile(args, model: str, what: str) -> tuple[dict, str]:
    """``hostile-models`` / ``hostile-images``: files a valid writer made hostile in content."""
    from tessera.tools.hostile import run_hostile_images, run_hostile_models

    stage(args, f"{args.hostile} hostile-but-valid {what} ...")
    bar = progress_bar(args.hostile, args)
    run = run_hostile_models if what == "models" else run_hostile_images
    h = run(model, count=args.hostile, seed=args.seed, progress=lambda i: bar.update(1))
    bar.close()
    done = h["accepted"] if what == "models" else h["booted_with_image"]
    line = (f"hostile-but-valid {what} x{h.get('models', h.get('images'))}: {done} taken, "
            f"{h['failures']} failures ({h['internal']} INTERNAL, {h['slow']} slower than 2 s, "
            f"{h['lost_model']} times not teaching a word afterwards); slowest "
            f"{h['worst_ms']} ms, peak traced memory {h['peak_mb']} MB")
    return h, line


#: the parts of ``tessera bench protocol``: name -> (result key, runner)
PARTS = {
    "fuzz": ("fuzz", _part_fuzz),
    "structured": ("structured_fuzz", _part_structured),
    "flash-images": ("flash_fuzz", _part_flash_images),
    "lossy": ("lossy_enroll", _part_lossy),
    "lossy-stream": ("lossy_stream", _part_lossy_stream),
    "kill": ("kill_during_save", _part_kill),
    "enroll-kills": ("enroll_kills", _part_enroll_kills),
    "link": ("link_budget", _part_link),
    "flood": ("garbage_flood", _part_flood),
    "models": ("model_fuzz", _part_models),
    "stream": ("long_stream", _part_stream),
    "pty": ("pty_enroll", _part_pty),
    "hostile-models": ("hostile_models", lambda a, m, pb: _part_hostile(a, m, "models")),
    "hostile-images": ("hostile_images", lambda a, m, pb: _part_hostile(a, m, "images")),
}


def cmd_bench_protocol(args: argparse.Namespace) -> int:
    from tessera.tools import protocol_bench as pb
    from tessera.tools.bench import machine_info

    model = args.model or default_tsr()
    r = {"model": model}
    lines = []
    for name, (key, run) in PARTS.items():          # in the table's order
        if name in args.parts:
            r[key], line = run(args, model, pb)
            lines.append(line)
    r.update(machine_info())
    emit(args, r, "\n".join(lines))
    return 0 if protocol_ok(r) else 1


def protocol_ok(r: dict) -> bool:
    """Every part that ran held its invariant."""
    ok = all(r.get(k, {}).get(f, v) == v for k, f, v in (
        ("fuzz", "crashes", 0), ("fuzz", "hangs", 0), ("fuzz", "unanswered", 0),
        ("structured_fuzz", "failures", []), ("flash_fuzz", "failures", []),
        ("lossy_enroll", "exactly_once", True), ("kill_during_save", "corrupt", 0),
        ("enroll_kills", "doubled", 0), ("enroll_kills", "lost", 0),
        ("garbage_flood", "resynchronised", True), ("lossy_stream",
                                                     "lossy_answer_equals_clean", True),
        ("model_fuzz", "chip_crashes", 0),
        ("model_fuzz", "chip_hangs", 0), ("model_fuzz", "board_crashes", 0),
        ("model_fuzz", "board_hangs", 0), ("model_fuzz", "board_lost_model", 0),
        ("hostile_models", "failures", 0), ("hostile_images", "failures", 0)))
    st = r.get("long_stream")
    ok = ok and (st is None or (st["chip"]["answers_identical_every_block"]
                                and st["board"]["no_drift"]))
    return ok


def register_bench_protocol(bsub, add) -> None:
    """``tessera bench protocol``'s parser."""
    bp = add(bsub, "protocol", cmd_bench_protocol, "protocol reliability and link budget")
    bp.add_argument("--model", help="a .tsr model (default: the committed model at 4 bits)")
    bp.add_argument("--parts", nargs="+",
                    default=["fuzz", "lossy", "kill", "link", "flood", "pty", "models"],
                    choices=["fuzz", "structured", "flash-images", "lossy", "kill",
                             "enroll-kills", "link",
                             "flood", "pty", "models", "stream", "lossy-stream",
                             "hostile-models", "hostile-images"],
                    help="which tests: fuzzed frames, structure-aware fuzzing (Hypothesis: "
                         "every message type, field and msgpack value; not by default: "
                         "--examples bodies), flash images mutated field by field (not by "
                         "default: --examples of them, at most 10,000), a lossy link, device "
                         "kills (during saves; during enrollments whose flash writes fail at random: "
                         "enroll-kills, not by default), the link budget, a 5 MB garbage flood, a real pseudo-terminal, mutated model "
                         "files through the chip and the board, a long stream (not by "
                         "default: --minutes of audio), utterances over a 1 %% lossy link (not "
                         "by default), models and flash images that a valid writer made hostile "
                         "in content (not by default: --hostile of each)")
    bp.add_argument("--minutes", type=positive_float, default=60.0,
                    help="minutes of audio of --parts stream")
    bp.add_argument("--mutants", type=positive_int, default=10_000,
                    help="mutated model files (--parts models)")
    bp.add_argument("--hostile", type=positive_int, default=10_000,
                    help="files of --parts hostile-models and hostile-images")
    bp.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    bp.add_argument("--frames", type=int, default=100_000, help="fuzzed frames")
    bp.add_argument("--examples", type=positive_int, default=100_000,
                    help="bodies of --parts structured")
    bp.add_argument("--board", choices=["thread", "process"], default="thread",
                    help="--parts structured: the firmware in this process (default) or "
                         "`tessera sim --pty` in its own (process exits, hangs and its memory "
                         "measured apart from the fuzzer's)")
    bp.add_argument("--seed", type=int, default=0, help="seed of --parts structured")
    bp.add_argument("--words", type=int, default=10, help="enrollments over the lossy link")
    bp.add_argument("--kills", type=positive_int, default=100,
                    help="device kills (--parts kill: during saves; enroll-kills: during "
                         "enrollments)")

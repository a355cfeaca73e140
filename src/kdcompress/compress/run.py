"""`run_compress`: a teacher in, the fastest model that keeps every language within the budget out.

Order of work: check every input before any output; import and fine-tune the teacher; distil the candidates
cheapest first with the transfer recipe, export each to every runtime form this machine offers (under the
per-language int8/bf16 control) and read its dev accuracy against the budget, stopping at the first candidate
that meets it (unless explore = all); benchmark everything made on the test split, interleaved, beside the fp32
teacher and the PyTorch mBERT-base shape; choose on dev, report on test, and publish the chosen export as model/.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kdcompress.compress.budget import Budget, gaps_to_teacher
from kdcompress.compress.candidates import Candidate, cheapest_first, parse_candidates
from kdcompress.compress.config import CompressConfig
from kdcompress.compress.forms import Form, forms_for, static_lengths_for
from kdcompress.compress.frontier import Frontier, build_frontier
from kdcompress.compress.reference import REFERENCE_NAME, make_reference
from kdcompress.compress.steps import Steps
from kdcompress.console import stderr_console
from kdcompress.errors import KDCompressError
from kdcompress.experiment.config import IMPORTABLE_TEACHERS
from kdcompress.io import atomic_output_dir, check_writable_output, read_json

console = stderr_console()



@dataclass(frozen=True)
class CompressResult:
    out: Path
    frontier: Frontier

    @property
    def met(self) -> bool:
        return self.frontier.chosen is not None

    @property
    def model_dir(self) -> Path | None:
        return self.out / "model" if self.met else None


@dataclass(frozen=True)
class _Plan:
    cfg: CompressConfig
    task: Any
    source: str
    targets: list[str]
    forms: list[Form]
    out: Path
    budget: Budget

    @property
    def common(self) -> dict[str, Any]:
        return dict(task=self.cfg.task, data_dir=self.cfg.data_dir, source_lang=self.source,
                    target_langs=self.targets)


def run_compress(config: CompressConfig | None = None, **overrides) -> CompressResult:
    """Run (or continue) a compression; keyword settings override `config`. Everything is checked before any output."""
    from kdcompress.quiet import quiet_libraries
    from kdcompress.settings import build

    quiet_libraries()
    cfg = build(CompressConfig, config, overrides)
    plan = _check(cfg)
    with _compress_dir(plan.out):
        return _run(plan)


def _runtimes(cfg: CompressConfig) -> list:
    """The registry rows to export to: every exported runtime that can run here, or the one asked for."""
    from kdcompress.runtime import registry

    if cfg.runtime == "auto":
        return registry.available_runtimes()
    row = registry.get_runtime(cfg.runtime)
    row.require()  # not installed: one line naming the install command
    return [row]


def _check(cfg: CompressConfig) -> _Plan:
    """Every input that can be checked before the teacher exists: languages, data files, teachers, runtimes,
    candidates and the step tables."""
    from kdcompress.data.corpus import check_corpora
    from kdcompress.data.tasks import data_dir_from_env, get_task, resolve_languages
    from kdcompress.model_check import check_model_dir_tokenizer, check_weights_readable
    from kdcompress.training import teacher_loading

    out = Path(cfg.out).expanduser()
    check_writable_output(out, overwrite=True)  # an existing `out` is a compression to continue, never replaced
    task = get_task(cfg.task)
    source, targets = resolve_languages(task, cfg.source_lang, cfg.target_langs)
    data_dir = data_dir_from_env(cfg.data_dir)
    task.load("train", source, data_dir=data_dir)
    for lang in [source, *targets]:
        for split in ("dev", "test"):
            task.load(split, lang, data_dir=data_dir)
    for name, role in ((cfg.teacher, "teacher"), (cfg.finetuned_teacher, "--finetuned-teacher")):
        if not name or name in IMPORTABLE_TEACHERS:
            continue
        config = teacher_loading.load_teacher_config(name, role=role)
        if Path(name).expanduser().is_dir():
            check_weights_readable(name, what=role)
            check_model_dir_tokenizer(name, config.vocab_size, what=role)
        if role != "teacher" and not teacher_loading.is_finetuned_for(config, task):
            raise KDCompressError(f"--finetuned-teacher {name} has no classification head for {task.name} "
                                  f"({len(task.labels)} labels); pass a folder made by `kdcompress finetune-teacher`, "
                                  "or leave the option out and compress fine-tunes the teacher")
    parse_candidates(cfg.candidates)
    check_corpora(cfg.distill)  # before an imported teacher is written into `out`
    cfg.step_settings("distill", out="x")
    cfg.step_settings("export", model_dir="x", out="x")
    cfg.step_settings("bench")
    from kdcompress.training.config import DistillConfig

    max_length = int(cfg.distill.get("max_length", DistillConfig.max_length))
    forms = forms_for(_runtimes(cfg), cfg.int8, static_lengths_for(max_length) if cfg.static_lengths else ())
    if not forms:
        raise KDCompressError("no exported runtime can run on this machine; pip install onnxruntime (or "
                              "'kdcompress[openvino]')")
    return _Plan(cfg, task, source, targets, forms, out,
                 Budget(cfg.max_drop, cfg.max_drop_lang, cfg.max_drop_source, cfg.confidence))


@contextlib.contextmanager
def _compress_dir(out: Path) -> Iterator[None]:
    from kdcompress.locks import output_lock

    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        yield


def _run(plan: _Plan) -> CompressResult:
    from kdcompress import finetune_teacher, import_teacher
    from kdcompress.experiment.step_settings import teacher_settings
    from kdcompress.training import teacher_loading

    cfg = plan.cfg
    steps = Steps(plan.out / "work")
    teacher = cfg.teacher
    if teacher in IMPORTABLE_TEACHERS:
        teacher = str(steps.run(f"import teacher ({teacher})", plan.out / "work" / "teachers" / teacher,
                                lambda target, _: import_teacher(cfg.teacher, target)))
    teacher_config = teacher_loading.load_teacher_config(teacher)
    candidates = cheapest_first(parse_candidates(cfg.candidates), teacher_config.num_hidden_layers,
                                teacher_config.hidden_size)
    # compress reads every student's dev accuracy itself (the student's and each exported form's): distill's own
    # closing evaluation would be the same work again
    # The transfer set reads the task's train text only: compress chooses on dev, so dev text must stay unseen (with
    # it in the transfer set and the trimmed vocabulary, the 6-layer student was 2.8 points from the teacher on dev
    # and 7.1 on test). A [distill] corpus still wins.
    base = {"evaluate": False, "corpus": ["task:train"], **cfg.distill, **plan.common, "seed": cfg.seed,
            "teacher": teacher, "teacher_logits_cache": str(plan.out / "work" / "teacher-logits")}
    given = cfg.finetuned_teacher or (teacher if teacher_loading.is_finetuned_for(teacher_config, plan.task) else None)
    _check_students(plan, candidates, base, given)  # before the teacher trains: a bad shape fails in seconds
    # The teacher's folder is named by the settings its fine-tuning reads, so that a student-only change (corpus,
    # alpha, shape) reuses it
    teacher_step = teacher_settings(base)
    finetuned = given or str(steps.run(
        "fine-tune the teacher", steps.folder("teachers", "finetuned", teacher_step),
        lambda target, resume: finetune_teacher(**base, out=str(target), resume=resume), teacher_step))

    teacher_dev = _dev_accuracy(plan, steps, {"teacher": finetuned}, "dev-teacher")["teacher"]
    tried: list[dict] = []
    for candidate in candidates:
        entry = _try_candidate(plan, steps, candidate, base, finetuned, teacher_dev)
        tried.append(entry)
        if entry["meets_on_dev"] and cfg.explore == "until-found":
            break
    compared = _compare_strategies(plan, steps, base, finetuned, _comparison_shape(tried, candidates))
    test = _test_bench(plan, steps, finetuned, tried, compared)
    frontier = build_frontier(plan.budget, tried, compared, test, teacher_dev, settings=cfg.to_dict(),
                              timings=steps.timings, reused=steps.reused)
    _publish(plan, frontier, tried)
    return CompressResult(plan.out, frontier)


def _student_settings(base: dict, finetuned: str | None, shape: Candidate, strategy: str, trim_vocab: bool) -> dict:
    from kdcompress.training.config import DistillConfig

    trim = trim_vocab or shape.is_static
    settings = {**base, "strategy": strategy, "finetuned_teacher": finetuned, **shape.distill_settings(),
                "trim_vocab": trim}
    if trim:  # named even at its default: folders trimmed before the setting existed must not pass for its output
        settings.setdefault("trim_vocab_characters", DistillConfig.trim_vocab_characters)
    return settings


def _check_students(plan: _Plan, candidates: list[Candidate], base: dict, finetuned: str | None) -> None:
    """What `distill` checks first (student shape, corpus, transfer set), for every student before the first trains."""
    from kdcompress.training.config import DistillConfig
    from kdcompress.training.setup import prepare

    for candidate in candidates:  # one through an assistant is checked from the teacher: the assistant is not made yet
        settings = _student_settings(base, finetuned, candidate, "transfer", plan.cfg.trim_vocab)
        prepare(DistillConfig.from_dict(settings, where=f"candidate {candidate.name}"))
    shape = _comparison_shape([], candidates)
    for strategy in plan.cfg.compare_strategies if shape else ():
        settings = _student_settings(base, finetuned, shape, strategy, plan.cfg.trim_vocab)
        prepare(DistillConfig.from_dict(settings, where=f"--compare-strategies {strategy}"))


def _try_candidate(plan: _Plan, steps: Steps, candidate: Candidate, base: dict, finetuned: str,
                   teacher_dev: dict) -> dict:
    student = _distil(plan, steps, candidate, base, finetuned)
    # int8 keeps a form's accuracy at best (the control lets it lose up to a point a language), so until-found makes a
    # candidate's int8 forms only once its full-precision forms meet the budget: that skips the int8 searches (2-6 min
    # each on 2 cores) of every candidate that is too weak anyway. explore = all makes every form, for the frontier.
    full, int8 = [f for f in plan.forms if not f.int8], [f for f in plan.forms if f.int8]
    groups = [plan.forms] if plan.cfg.explore == "all" or not int8 else [full, int8]
    models, forms, dev, verdicts = {}, {}, {}, {}  # the exported forms: what is served, judged and benchmarked
    student_verdict = None
    for index, group in enumerate(groups):
        if index and not student_verdict["meets"]:
            console.print(f"{candidate.name}: int8 forms not made: its full-precision forms miss the budget on dev, "
                          "and int8 keeps accuracy at best")
            break
        exported = _export_forms(plan, steps, candidate, student, group)
        made = {name: path for name, (_, path) in exported.items()}
        if index and not made:
            continue
        measured = {candidate.name: str(student), **made} if index == 0 else made  # the student's verdict comes first
        group_dev = _dev_accuracy(plan, steps, measured, f"dev-{candidate.name}" + ("-int8" if index else ""))
        if index == 0:
            student_verdict = _verdict(plan, group_dev[candidate.name], teacher_dev)
            _say(candidate.name + " (PyTorch fp32)", student_verdict)
        for name, (form, _) in exported.items():
            verdicts[name] = _verdict(plan, group_dev[name], teacher_dev)
            if not form.int8:
                # fp32 and bf16 forms compute the same student up to rounding (bf16 only where the export's control
                # kept every language), so they share the student's verdict: judged each on its own, one form met a
                # 3-point budget at 2.93 and its 2.3x faster OpenVINO twin missed at 3.06, a tenth of the standard
                # error apart. int8 changes the model: judged on its own accuracy.
                verdicts[name] = {**student_verdict, "form_gaps": verdicts[name]["gaps"],
                                  "judged_on": f"{candidate.name} (PyTorch fp32)"}
            else:
                _say(name, verdicts[name])
        models.update(made)
        forms.update({name: form for name, (form, _) in exported.items()})
        dev.update(group_dev)
    return {"candidate": candidate, "student": str(student), "models": models, "forms": forms, "dev": dev,
            "student_verdict": student_verdict, "verdicts": verdicts,
            "meets_on_dev": any(verdicts[name]["meets"] for name in forms)}


def _verdict(plan: _Plan, accuracy: dict, teacher_dev: dict) -> dict:
    gaps = gaps_to_teacher(accuracy, teacher_dev, source_lang=plan.source)
    return {"gaps": gaps.to_dict(), "meets": plan.budget.meets(gaps), "excess": plan.budget.excess(gaps)}


def _say(name: str, verdict: dict) -> None:
    gaps = verdict["gaps"]
    mark = "[green]meets[/]" if verdict["meets"] else "[yellow]misses[/]"
    console.print(f"{name}: {mark} the budget on dev (target average {gaps['target_average']:+.1f} "
                  f"± {gaps['target_average_se']:.1f} points below the teacher, worst {gaps['worst_language']} "
                  f"{gaps['worst_gap']:+.1f} ± {gaps['worst_se']:.1f})")


def _exportable(candidate: Candidate, form: Form) -> bool:
    # static int8 calibrates activations of matrix multiplies: an embedding bag has one, the head
    return not (candidate.is_static and form.int8 and form.quantize == "static")


def _export_forms(plan: _Plan, steps: Steps, candidate: Candidate, student: Path,
                  forms: list[Form]) -> dict[str, tuple[Form, str]]:
    """{model name: (form, export folder)} of the candidate's student in each of `forms` it can take."""
    from kdcompress import export_onnx
    from kdcompress.runtime import registry

    made = {}
    for form in (f for f in forms if _exportable(candidate, f)):
        export_settings = {**plan.cfg.export, "model_dir": str(student), **form.export_settings(),
                           "task": plan.cfg.task, "langs": [plan.source, *plan.targets], "data_dir": plan.cfg.data_dir}
        if form.int8 or registry.get_runtime(form.runtime).precisions:
            # the int8/bf16 control reads dev's sampling error as the budget does
            export_settings.setdefault("int8_confidence", plan.cfg.confidence)
        name = f"{candidate.name}-{form.suffix}"
        made[name] = (form, str(steps.run(f"export {name}", steps.folder("exports", name, export_settings),
                                          lambda target, _, s=export_settings: export_onnx(**s, out=str(target)),
                                          export_settings)))
    return made


def _distil(plan: _Plan, steps: Steps, candidate: Candidate, base: dict, finetuned: str) -> Path:
    """The candidate's student by the transfer recipe, from the fine-tuned teacher or through its teacher assistant
    (the assistant is the direct candidate of that depth: one folder, reused by both)."""
    from kdcompress import distill

    teacher = finetuned
    if candidate.assistant is not None:
        teacher = str(_distil(plan, steps, candidate.assistant, base, finetuned))
        base = {**base, "teacher": teacher}
    settings = _student_settings(base, teacher, candidate, "transfer", plan.cfg.trim_vocab)
    return steps.run(f"distill {candidate.name}", steps.folder("students", candidate.name, settings),
                     lambda target, resume: distill(**settings, out=str(target), resume=resume), settings)


def _comparison_shape(tried: list[dict], candidates: list[Candidate]) -> Candidate | None:
    """The shape the paper's strategies are distilled at: the first transformer candidate that met the budget, else
    the largest one tried, else the cheapest one listed (pretraining KD needs layers: never the static student)."""
    layered = [t["candidate"] for t in tried if not t["candidate"].is_static]
    meeting = [t["candidate"] for t in tried if t["meets_on_dev"] and not t["candidate"].is_static]
    listed = [c for c in candidates if not c.is_static]
    return meeting[0] if meeting else layered[-1] if layered else listed[0] if listed else None


def _compare_strategies(plan: _Plan, steps: Steps, base: dict, finetuned: str,
                        shape: Candidate | None) -> dict[str, str]:
    from kdcompress import distill
    from kdcompress.training.strategies import get_strategy

    made = {}
    if shape is None:
        if plan.cfg.compare_strategies:
            console.print("[yellow]no transformer candidate to distil the compared strategies at: skipped[/]")
        return made
    for strategy in plan.cfg.compare_strategies:
        settings = _student_settings(base, finetuned, shape, strategy, plan.cfg.trim_vocab)
        if not get_strategy(strategy).uses_finetuned_teacher:
            settings.pop("finetuned_teacher")
        name = f"{shape.name}-{strategy}"
        made[name] = str(steps.run(f"distill {name} (for comparison)", steps.folder("students", name, settings),
                                   lambda target, resume, s=settings: distill(**s, out=str(target), resume=resume),
                                   settings))
    return made


def _bench_settings(plan: _Plan, models: dict[str, str], defaults: dict, forced: dict) -> dict:
    """defaults < the [bench] table < what this step must have."""
    return {**defaults, **plan.cfg.bench, **plan.common, "models": models, "threads": plan.cfg.threads, **forced}


def _run_bench_step(steps: Steps, label: str, kind_name: str, settings: dict) -> dict:
    from kdcompress import run_bench

    folder = steps.run(label, steps.folder("bench", kind_name, settings),
                       lambda target, _: run_bench(**settings, out=str(target), console=console), settings)
    return read_json(folder / "bench.json", what="bench report")


def _dev_accuracy(plan: _Plan, steps: Steps, models: dict[str, str], name: str) -> dict[str, dict]:
    """Dev accuracy per language of each model (what the budget is judged on); latency is left to the test bench."""
    first = next(iter(models))
    settings = _bench_settings(plan, models, {}, dict(
        split="dev", latency_models=[first], batch_sizes=[1], seq_lens=[8], real_lengths=False, warmup=0, repeats=1,
        rounds=1, memory=False, throughput=False, limit=None, sentence_hits=True))
    return _run_bench_step(steps, f"dev accuracy ({', '.join(models)})", name, settings)["accuracy"]


def _test_bench(plan: _Plan, steps: Steps, finetuned: str, tried: list[dict], compared: dict[str, str]) -> dict:
    """Test accuracy of everything made, and latency side by side with the fp32 teacher and the mBERT-base shape."""
    reference = steps.run("the PyTorch mBERT-base shape (random weights: latency only)",
                          plan.out / "work" / "reference" / REFERENCE_NAME,
                          lambda target, _: make_reference(target, finetuned, tuple(plan.task.labels)))
    # The exported forms only: a PyTorch student is not what gets served (its dev accuracy was read above, and its
    # fp32 export has the same logits, checked at export).
    models = {"teacher": finetuned, REFERENCE_NAME: str(reference)}
    for entry in tried:
        models.update({name: entry["models"][name] for name in entry["forms"]})
    timed = list(models)
    models.update(compared)  # accuracy only: they show what the recipe adds, not another speed
    settings = _bench_settings(
        plan, models, dict(batch_sizes=[1], seq_lens=[128], real_lengths=True, throughput=False),
        dict(split="test", baseline="teacher", latency_models=timed,
             accuracy_models=[name for name in models if name != REFERENCE_NAME]))  # random weights: speed only
    return _run_bench_step(steps, "benchmark on test (accuracy, latency, memory)", "test", settings)


def _publish(plan: _Plan, frontier: Frontier, tried: list[dict]) -> None:
    from kdcompress.compress.report import write_frontier_report

    write_frontier_report(plan.out, frontier)
    model = plan.out / "model"
    if frontier.chosen is None:
        if model.exists():  # a model chosen under other settings must not pass for this run's answer
            shutil.rmtree(model)
        return
    chosen_dir = next(entry["models"][frontier.chosen] for entry in tried if frontier.chosen in entry["models"])
    with atomic_output_dir(model, overwrite=True) as staging:
        shutil.copytree(chosen_dir, staging, dirs_exist_ok=True)

"""seq-captions through the cell runner: the captioning objective, its CIDEr, its bytes, its extra metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import registry
from benchmark.caption_metrics import ALL_METRICS, tokenize
from benchmark.captioner import CaptionModel
from benchmark.cell import run_cell
from benchmark.cell_data import to_tensors
from benchmark.config import CellConfig, TrainConfig
from benchmark.contracts import TokenBatch, TokenInputs, full_positions, patchify
from benchmark.errors import UserError
from benchmark.gallery import GallerySource, compute_gallery
from benchmark.grid import load_grid
from benchmark.learner import TaskCache, build_learner, create_entries
from benchmark.memory import MemoryBuffer, kept_token_count
from benchmark.objectives import Captioning, EvalSet
from benchmark.preflight import preflight
from benchmark.pretrain import WEIGHTS_DIR, default_recipe, load_backbone_weights
from benchmark.results import FINISHED, CellResult
from benchmark.task_memory import store_task_memory
from methods.attribution import gradients_and_lrp
from reports.gallery import draw_gallery
from tasks.procedural import COLOURS
from tests.conftest import every_memory_method

torch.set_num_threads(1)

TASK_PARAMS = {"train_per_task": 30, "test_per_task": 10}
TRAIN = TrainConfig(epochs=1, batch_size=16, replay_batch_size=16)


def cell(method: str, retention: float | None = 0.1, token_fraction: float = 1.0) -> CellConfig:
    sample, _, token = method.partition("+")
    return CellConfig(
        grid="test",
        task="seq-captions",
        task_params=dict(TASK_PARAMS),
        method=method,
        sample_selector=sample,
        token_selector=token or None,
        selector_params={},
        token_selector_params={},
        retention=retention,
        token_fraction=token_fraction,
        seed=0,
        train=TRAIN,
    )


@pytest.fixture(scope="module")
def stream():
    return registry.create("task", "seq-captions", **TASK_PARAMS).build()


@pytest.fixture(scope="module")
def results(stream):
    cache = TaskCache()
    cache.streams[f"seq-captions:{sorted(TASK_PARAMS.items())}"] = stream
    return {
        "gradmatch": run_cell(cell("gradmatch"), "test", cache),
        "random+gradlrp": run_cell(cell("random+gradlrp", token_fraction=0.25), "test", cache),
    }


def test_seq_captions_declares_captioning_and_shape_colour_categories(stream) -> None:
    assert stream.objective == "captioning"
    for index, experience in enumerate(stream.experiences):
        categories = experience.categories
        assert categories.dtype == np.int64 and categories.shape == (30,)
        # shape × colour: this task's shape block, several colours in it
        assert (categories // len(COLOURS) == index).all() and len(np.unique(categories)) > 1


@pytest.mark.parametrize("method", ["gradmatch", "random+gradlrp"])
def test_caption_cell_finishes_with_cider_matrix_exact_bytes_and_extra_metrics(
    results, stream, method: str
) -> None:
    result = results[method]
    assert result.status == FINISHED, result.error
    matrix = np.array(result.accuracy_matrix)
    assert matrix.shape == (5, 5) and np.isfinite(matrix).all() and (matrix >= 0).all()
    extra = result.extra_metrics
    assert extra is not None and extra["metric"] == "CIDEr"
    assert len(extra["per_task"]) == 5 and set(extra["average"]) == set(ALL_METRICS)
    # The last row and the end-of-cell metrics score the same final model's captions.
    assert [row["CIDEr"] for row in extra["per_task"]] == result.accuracy_matrix[-1]
    for row in extra["per_task"]:
        assert isinstance(row["METEOR"], float) and 0.0 <= row["METEOR"] <= 1.0
        assert all(isinstance(row[name], float) for name in ALL_METRICS if name != "SPICE")
    if extra["average"]["SPICE"] is None:
        assert extra["not_available"]["SPICE"]  # a reason, never a silent zero
    else:
        assert isinstance(extra["average"]["SPICE"], float)
    assert "extra_metrics" in result.to_dict()

    # Bytes: per sample, the kept tokens (pixels + a uint16 position each), or the whole image, plus
    # the caption as L uint16 ids; no class label besides it.
    length = stream.experiences[0].train_labels.shape[1]
    patch_bytes = 3 * stream.backbone.patch_size**2
    tokens = stream.tokens
    if "+" in method:
        kept = kept_token_count(0.25, tokens)
        per_sample = kept * (patch_bytes + 2) + 2 * length
        assert result.tokens_per_sample == kept
    else:
        per_sample = tokens * patch_bytes + 2 * length
    assert result.bytes_used_per_task == [n * per_sample for n in result.samples_per_task]
    assert result.bytes_used == sum(result.bytes_used_per_task) <= result.bytes_allowed
    assert all(n > 0 for n in result.samples_per_task)


def test_classification_records_keep_their_keys() -> None:
    record = CellResult(config={}, config_hash="x", status=FINISHED).to_dict()
    assert "extra_metrics" not in record


def trained_captioner(stream, steps: int = 40) -> CaptionModel:
    objective = Captioning()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = objective.build_model(stream, mask_token=False)
    model.load_backbone(load_backbone_weights(default_recipe(stream.backbone), WEIGHTS_DIR))
    experience = stream.experiences[0]
    patches = torch.from_numpy(patchify(experience.train_images, stream.backbone.patch_size))
    batch = TokenBatch(patches, full_positions(len(patches), patches.shape[1]))
    targets = torch.from_numpy(experience.train_labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model.loss(batch, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def test_objective_cider_is_pycocoevalcaps_cider_on_the_tokenized_captions(stream) -> None:
    from pycocoevalcap.cider.cider import Cider

    objective = Captioning()
    model = trained_captioner(stream)
    objective.vocabulary = stream.vocabulary
    experience = stream.experiences[0]
    patches = torch.from_numpy(patchify(experience.test_images, stream.backbone.patch_size))
    data = TokenBatch(patches, full_positions(len(patches), patches.shape[1]))
    targets = torch.from_numpy(experience.test_labels)
    device = torch.device("cpu")
    ours = objective.evaluate(model, data, targets, experience.test_references, 4, device)

    predictions = objective.captions(model, data, 4, device)
    gts = tokenize({i: list(refs) for i, refs in enumerate(experience.test_references)})
    res = tokenize({i: [text] for i, text in enumerate(predictions)})
    direct, _ = Cider().compute_score(gts, res)
    assert ours == pytest.approx(float(direct), abs=1e-12)
    assert ours > 0  # the check is not 0 = 0: a few steps already name the shape
    # evaluate_many scores each set as its own corpus: the same number again, and one per set
    many = objective.evaluate_many(model, [EvalSet(data, targets, experience.test_references)] * 2, 4, device)
    assert many == [ours, ours]


def test_captioner_answers_the_continual_model_contract(stream) -> None:
    objective = Captioning()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = objective.build_model(stream, mask_token=True)
    assert model.encoder.mask_token is not None
    experience = stream.experiences[1]
    patches = torch.from_numpy(patchify(experience.train_images[:4], stream.backbone.patch_size))
    batch = TokenBatch(patches, full_positions(4, patches.shape[1]))
    targets = torch.from_numpy(experience.train_labels[:4])
    model.eval()
    torch.testing.assert_close(model.target_score(batch, targets), -model.per_sample_loss(batch, targets))
    torch.testing.assert_close(model.loss(batch, targets), model.per_sample_loss(batch, targets).mean())
    features, grads = model.features_and_grad_proxy(batch, targets, True)
    assert features.shape == (4, 64) and grads is not None
    torch.testing.assert_close(grads, model.output_grad_proxy(batch, targets))
    masked = TokenBatch(batch.patches, batch.positions, masked=torch.zeros(4, 16, dtype=torch.bool))
    masked.masked[:, :8] = True
    assert not torch.allclose(model.per_sample_loss(masked, targets), model.per_sample_loss(batch, targets))


def test_gradlrp_on_the_captioner_conserves_the_output_relevance(stream) -> None:
    # Relevance starts as gradient × input at the encoder's output states; the block rules are
    # conservative, so its total reaches the first block's input.
    model = trained_captioner(stream, steps=5)
    experience = stream.experiences[0]
    patches = torch.from_numpy(patchify(experience.train_images[:3], stream.backbone.patch_size))
    batch = TokenBatch(patches, full_positions(3, patches.shape[1]))
    targets = torch.from_numpy(experience.train_labels[:3])
    states = {}
    handle = model.encoder.vit.norm.register_forward_hook(lambda m, a, out: states.setdefault("x", out))
    with torch.enable_grad():
        score = model.target_score(batch, targets)
        (gradient,) = torch.autograd.grad(score.sum(), states["x"])
    handle.remove()
    start = (states["x"] * gradient).detach().sum(dim=(1, 2))
    grads, relevances, at_input = gradients_and_lrp(model, batch, targets)
    assert len(grads) == len(relevances) == stream.backbone.depth
    torch.testing.assert_close(at_input.sum(dim=(1, 2)), start, rtol=1e-3, atol=1e-4)
    selector = registry.create("token_selector", "gradlrp")
    scores = selector.rank(model, TokenInputs(batch, np.random.default_rng(0)), targets)
    assert scores.shape == (3, 16) and scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert all(p.grad is None for p in model.parameters())


def test_report_gallery_ranks_the_captioners_tokens(stream) -> None:
    source = GallerySource("seq-captions", dict(TASK_PARAMS), {})
    gallery = compute_gallery(source, stream, count=3, epochs=1)
    assert set(gallery.kept) == set(registry.names("token_selector"))
    assert all(keep.shape == (3, 16) and (keep.sum(axis=1) == 4).all() for keep in gallery.kept.values())
    assert len(gallery.captions) == 3 and all("circle" in gallery.row_label(i) for i in range(3))
    draw_gallery(gallery)


@pytest.mark.parametrize("method", every_memory_method())
def test_every_selector_stores_a_caption_tasks_memory(stream, method: str) -> None:
    # What run_cell does after a task, for each selector, on the captioner (every cell would take ~20 s).
    config = cell(method, token_fraction=0.25 if "+" in method else 1.0)
    cache = TaskCache()
    cache.streams[f"seq-captions:{sorted(TASK_PARAMS.items())}"] = stream
    entries = create_entries(config, cache)
    learner = build_learner(config, entries, WEIGHTS_DIR)
    memory = MemoryBuffer(stream.tokens)
    for index in range(2):  # the second task's selection sees the first's memory (OCS, drawn from it)
        current, _ = to_tensors(stream.experiences[index], stream.backbone.patch_size)
        store_task_memory(learner, entries, memory, current, index, config)
    assert len(memory.entries) == 2 and all(len(entry) > 0 for entry in memory.entries)
    assert memory.bytes_used <= memory.bytes_allowed
    assert memory.entries[0].labels.shape[1] == stream.experiences[0].train_labels.shape[1]


def test_a_caption_grid_without_java_is_refused_before_any_cell(tmp_path, monkeypatch) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(
        'tasks = ["seq-captions"]\nmethods = ["none"]\nretention = [0.05]\nseeds = [0]\n'
        "[task_params.seq-captions]\ntrain_per_task = 30\ntest_per_task = 10\n"
    )
    cache = TaskCache()
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UserError, match="need Java") as caught:
        preflight(load_grid(grid), cache, WEIGHTS_DIR)
    assert "\n" not in str(caught.value)

"""Figures a reader can trust: training accuracy never on a loss axis, each loss term on its own
axis, seeds distinguishable, a 0..E epoch axis for short runs, every method in one base-vs-novel
figure, value labels on the HM bars, and the caveats (backbone, random weights, shots, seeds, the
published protocol) in the titles."""
import os

from repro.report import curves, plots
from repro.report.collect import scan
from repro.report.tables import build_tables
from fixtures_repro import result_block, write_log

PAPER = {"_protocol": {"backbone": "ViT-B/16"}}


def _it(e, b, loss, kd, acc, E=1, B=2):
    return (f"epoch [{e}/{E}] batch [{b}/{B}] time 0.100 (0.120) data 0.001 (0.002) loss {loss:.4f} ({loss:.4f}) "
            f"loss_kd {kd:.4f} ({kd:.4f}) acc {acc:.4f} ({acc:.4f}) lr 2.0000e-03 eta 0:00:01")


def _capture(monkeypatch, module):
    figs = []

    def fake_save(fig, path):
        figs.append((os.path.basename(path), fig))
        with open(path, "wb") as f:
            f.write(b"png")
        return path

    monkeypatch.setattr(module, "_save", fake_save)
    monkeypatch.setattr(module, "_plt", lambda: _Keep())
    return figs


class _Keep:
    """pyplot whose ``close`` keeps the figure open, so that the test can inspect it."""

    def __getattr__(self, name):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return (lambda *a, **k: None) if name == "close" else getattr(plt, name)


def test_one_epoch_curves_split_losses_accuracy_and_seeds(tmp_path, monkeypatch):
    root = tmp_path / "out"
    for seed in (1, 2):
        d = root / f"base2new/train_base/dtd/shots_8/CoOp/cfg/seed{seed}"
        d.mkdir(parents=True)
        lines = [_it(1, 1, 2.0 + seed, 0.03, 40.0 + seed), _it(1, 2, 1.5 + seed, 0.02, 60.0 + seed),
                 "Finish training", "Evaluate on the *test* set"] + result_block(50.0 + seed)
        (d / "log.txt").write_text("\n".join(lines) + "\n")
    log = root / "base2new/train_base/dtd/shots_8/CoOp/cfg/seed1/log.txt"
    losses, accs = curves.split_meters(curves.loss_curves(log.read_text().splitlines()))
    assert set(losses) == {"loss", "loss_kd"} and set(accs) == {"acc"}
    figs = _capture(monkeypatch, curves)
    curves.write_curves(str(root), str(tmp_path / "plots"))
    (name, fig), = figs
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["total loss", "loss term loss_kd", "accuracy"]
    for ax in axes:  # a 1-epoch run spans its epoch, not a ±10 range around one point
        assert ax.get_xlim()[1] < 1.5 and ax.get_xlim()[0] > -0.5
    kd_lo, kd_hi = axes[1].get_ylim()
    assert kd_hi - kd_lo < 0.1  # L_kd on its own axis: its dynamics are visible
    loss_lines = axes[0].get_lines()
    assert len(loss_lines) == 2 and loss_lines[0].get_linestyle() != loss_lines[1].get_linestyle()
    assert loss_lines[0].get_color() != loss_lines[1].get_color()
    assert max(max(line.get_ydata()) for line in loss_lines) < 10  # no accuracy on the loss axis
    labels = axes[2].get_legend_handles_labels()[1]
    assert "seed 1 train acc" in labels and "seed 2 base test 52.0" in labels
    assert "8 shots" in fig._suptitle.get_text() and "2 seeds" in fig._suptitle.get_text()


def test_tensorboard_steps_become_epochs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for step in (2, 4, 6, 8):
        w.add_scalar("train/epoch", step / 4, step)
    w.add_scalar("val/accuracy", 40.0, 4)
    w.add_scalar("val/accuracy", 45.0, 8)
    w.add_scalar("test/accuracy", 50.0, 8)
    w.close()
    assert curves.event_accuracy(str(tmp_path / "tb")) == {"val": [(1.0, 40.0), (2.0, 45.0)], "test": [(2.0, 50.0)]}


def test_all_methods_figure_bar_labels_and_caveats(tmp_path, monkeypatch):
    root = str(tmp_path)
    for trainer, (b, n) in (("CoOp", (80.0, 60.0)), ("CoMMA", (78.0, 70.0))):
        for ds in ("dtd", "eurosat"):
            write_log(f"{root}/base2new/train_base/{ds}/shots_8/{trainer}/cfg/seed1", b)
            write_log(f"{root}/base2new/test_new/{ds}/shots_8/{trainer}/cfg/seed1", n, "eval")
    tables = build_tables(scan(root)[0])
    captured = _capture(monkeypatch, plots)
    plots.write_plots(tables, str(tmp_path / "plots"), PAPER)
    figs = dict(captured)
    assert set(figs) == {"base_vs_novel_CoOp.png", "base_vs_novel_CoMMA.png", "base_vs_novel_all.png",
                         "hm_per_dataset.png"}
    ax = figs["base_vs_novel_all.png"].axes[0]
    legend = ax.get_legend_handles_labels()[1]
    assert any(x.startswith("CoOp: 80.0 / 60.0 (HM 68.6)") for x in legend)
    assert any(x.startswith("CoMMA: 78.0 / 70.0") for x in legend)
    assert "8 shots" in ax.get_title() and "1 seed" in ax.get_title() and "not the published protocol" in ax.get_title()
    bars = figs["hm_per_dataset.png"].axes[0]
    texts = sorted(t.get_text() for t in bars.texts)
    assert "68.6" in texts and len(texts) == 6  # 2 methods x (2 datasets + Average)

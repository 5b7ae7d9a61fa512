"""experiments.coarea (C6): artifacts at a tiny size, and the surface integral vs closed forms."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from experiments import coarea
from readout_jax import io as rio

TINY = dataclasses.replace(
    coarea.Config.quick(),
    radii=(0.05, 0.2, 0.5),
    num_samples=1 << 15,
    batch_size=1 << 14,
    grid_size=129,
    gauss_nodes=4,
    num_curve_radii=5,
    hidden_width=8,
)


def test_tiny_run_writes_result_and_figures(tmp_path):
    result = coarea.run(TINY, tmp_path)
    folder = tmp_path / "coarea"
    loaded = rio.read_json(folder / "result.json")
    assert loaded == result
    for field in ("name", "config", "seed", "versions", "elapsed_seconds", "metrics", "claims"):
        assert field in loaded
    assert loaded["name"] == "coarea" and loaded["config"]["grid_size"] == 129
    claims = loaded["claims"]
    assert [c["claim"] for c in claims] == ["C6"] * 3
    for c in claims:
        assert math.isfinite(c["measured"]) and c["measured"] >= 0
        assert c["tolerance"] == TINY.num_se and isinstance(c["held"], bool) and c["detail"]
    assert set(loaded["metrics"]["margins"]) == set(coarea.MARGINS)
    for d in loaded["metrics"]["margins"].values():
        assert all(math.isfinite(v) for v in d["coarea_mass"] + d["mc_mass"] + d["mc_se"])
    assert loaded["figures"] == ["tube_mass.png", "relative_error.png", "margins.png"]
    for name in loaded["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _world_and_margins(config=TINY):
    world = coarea.make_world(config)
    return world, coarea.make_margins(world, config, jr.key(0))


def test_linear_coarea_integral_equals_closed_form():
    world, margins = _world_and_margins()
    radii = np.array([0.02, 0.1, 0.5, 1.0])
    exact = coarea.linear_tube_mass_closed_form(world, margins["linear"], radii)
    errors = []
    for grid_size in (129, 257):
        grid = coarea.grid_fields(world, margins["linear"], grid_size=grid_size, box_sds=6.0)
        mass = coarea.coarea_tube_mass(grid, radii, gauss_nodes=8).mass
        errors.append(np.max(np.abs(mass / exact - 1.0)))
    assert errors[1] < 1e-4
    assert errors[0] / errors[1] > 3.0  # second order in the grid spacing


def test_quadratic_coarea_integral_equals_area_quadrature():
    world, margins = _world_and_margins()
    quad = margins["quadratic"]
    radii = np.array([0.02, 0.1, 0.5])
    reference = coarea.quadratic_tube_mass_reference(world, quad, radii)
    errors = []
    for grid_size in (257, 513):
        grid = coarea.grid_fields(world, quad, grid_size=grid_size, box_sds=6.0)
        crit = coarea.find_critical_values(quad, grid)
        mass = coarea.coarea_tube_mass(grid, radii, gauss_nodes=8, critical_values=crit).mass
        errors.append(np.max(np.abs(mass / reference - 1.0)))
    assert errors[1] < 1e-4
    assert errors[0] / errors[1] > 3.0  # second order in the grid spacing


def test_closed_form_matches_its_own_monte_carlo():
    world, margins = _world_and_margins()
    radii = np.array([0.1, 0.5])
    exact = coarea.linear_tube_mass_closed_form(world, margins["linear"], radii)
    mass, se, n = coarea.monte_carlo_tube_mass(
        world, [margins["linear"]], radii, key=jr.key(3), num_samples=1 << 16, batch_size=1 << 14
    )
    assert n == 1 << 16
    assert np.all(np.abs(mass[0] - exact) < 4 * se[0])


def test_level_set_integral_is_a_line_integral():
    # φ(x) = |x|, w = 1: the level set φ = u is a circle of length 2πu.
    xs = np.linspace(-2.0, 2.0, 257)
    gx, gy = np.meshgrid(xs, xs, indexing="ij")
    ones = np.ones_like(gx)
    grid = coarea.GridFields(xs, xs, np.hypot(gx, gy), ones, ones)
    u = np.array([0.5, 1.0, 1.5])
    np.testing.assert_allclose(coarea.level_set_integral(grid, u), 2 * np.pi * u, rtol=2e-4)
    # The blocks of (triangle, level) pairs do not change the answer.
    np.testing.assert_allclose(
        coarea.level_set_integral(grid, u, max_pairs=97), coarea.level_set_integral(grid, u)
    )


def test_critical_value_of_the_quadratic_margin():
    world, margins = _world_and_margins()
    quad = margins["quadratic"]
    grid = coarea.grid_fields(world, quad, grid_size=129, box_sds=6.0)
    crit = coarea.find_critical_values(quad, grid)
    assert crit == [pytest.approx(-float(quad.scale), abs=1e-8)]
    assert (
        coarea.find_critical_values(
            margins["linear"],
            coarea.grid_fields(world, margins["linear"], grid_size=65, box_sds=6.0),
        )
        == []
    )


def test_margins_are_distance_like():
    world, margins = _world_and_margins()
    assert float(jnp.linalg.norm(margins["linear"].normal)) == pytest.approx(1.0)
    x, _ = world.sample_data(jr.key(1), 2048)
    for margin in margins.values():
        grads = np.linalg.norm(np.asarray(jax.vmap(jax.grad(margin))(x)), axis=1)
        assert 0.05 < np.median(grads) < 5.0


def test_config_validation():
    with pytest.raises(ValueError, match="radii"):
        coarea.Config(radii=(0.2, 0.1))
    with pytest.raises(ValueError, match="grid_size"):
        coarea.Config(grid_size=128)
    with pytest.raises(ValueError, match="margins"):
        coarea.Config(margins=("cubic",))
    with pytest.raises(ValueError, match="gauss_nodes"):
        coarea.Config(gauss_nodes=5)


@pytest.mark.slow
def test_quick_scale_verdicts_hold(tmp_path):
    result = coarea.run(coarea.Config.quick(), tmp_path)
    assert all(c["held"] for c in result["claims"]), [c["detail"] for c in result["claims"]]

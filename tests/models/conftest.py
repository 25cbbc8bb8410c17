"""Small real inputs for the model tests: a random bipartite graph with two-modality features."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models.base import BipartiteGraph

NUM_USERS, NUM_ITEMS = 7, 9
MODALITY_DIMS = [6, 4]


@pytest.fixture
def graph() -> BipartiteGraph:
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(0, NUM_USERS, (30,), generator=gen)
    items = torch.randint(0, NUM_ITEMS - 1, (30,), generator=gen)  # last item: no edges
    edges = torch.unique(torch.stack([users, items]), dim=1)
    return BipartiteGraph(NUM_USERS, NUM_ITEMS, edges)


@pytest.fixture
def features() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(NUM_ITEMS, sum(MODALITY_DIMS), generator=gen)


@pytest.fixture
def modality_dims() -> list[int]:
    return list(MODALITY_DIMS)


def _bpr_loss(users: torch.Tensor, items: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """-ln sigma(y_ui - y_uj) over the graph's edges with one shifted negative each (eq. 19)."""
    u, i = edge_index
    j = (i + 1) % items.shape[0]
    diff = (users[u] * items[i]).sum(1) - (users[u] * items[j]).sum(1)
    return -torch.nn.functional.logsigmoid(diff).mean()


@pytest.fixture
def bpr_loss() -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    return _bpr_loss

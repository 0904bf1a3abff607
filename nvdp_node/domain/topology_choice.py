"""The best-linked set of whole GPUs for one container: an exact branch-and-bound search.

Called by :func:`nvdp_node.domain.preferred.preferred_allocation` for whole
GPUs when the node's :class:`~nvdp_node.domain.topology.LinkTable` knows
their links. Pure: plain lists in, plain lists out.

The set picked is the best by, in order:

1. its score (upstream's: the sum of its pair scores), so it never scores
   less than the set upstream's best-effort policy would pick, which
   maximises the score of a whole partition of the available GPUs and then
   takes the part holding the required ones;
2. the fewest NUMA nodes;
3. the weakest links to the available GPUs it leaves (the "cut"), so that
   what is left stays well linked for the next pod — upstream's reason for
   scoring partitions, at no exponential cost;
4. the lowest NVML indices (the caller's order).

Why it is fast although it is exact: it is a branch and bound that prunes
every branch whose bound cannot beat the best set so far (a greedy pick to
start with). The bound is what is picked, plus each remaining option's
links to it and its best links among the options left. A first pass, most
promising GPUs first, finds the best key; a second pass in index order
stops at the first set reaching it. GPUs that are interchangeable ("twins":
the same score to every other GPU and the same NUMA node, as under one PCIe
switch or on NVSwitch nodes) are taken in index order only, so equal sets
are never visited twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpus:
    """One request's GPUs in the caller's order: ``scores`` is the pair matrix, ``numa`` a node key each."""

    scores: Sequence[Sequence[int]]
    numa: Sequence[int]


def best_set(gpus: Gpus, required: Sequence[int], candidates: Sequence[int], need: int) -> list[int]:
    """Positions of the ``need`` candidates that, with ``required``, make the best set (see module doc).

    ``required`` and ``candidates`` are disjoint positions into ``gpus``;
    candidates are taken in ascending position when the keys tie.
    """
    candidates = sorted(candidates)
    if need <= 0:
        return []
    if need >= len(candidates):
        return candidates
    return sorted(_Search(gpus, list(required), candidates, need).run())


class _Search:
    """One search's working state; a set's ``key`` is one integer ordering sets by keys 1-3.

    key = (score·(N+1) − numa)·M − cut, and cut = Σdeg − 2·score, so twice
    the key is a sum over the set's members (plus the NUMA term), which
    gives the bound: what is picked so far, plus the best remaining values.
    """

    def __init__(self, gpus: Gpus, required: list[int], candidates: list[int], need: int) -> None:
        w = gpus.scores
        members = required + candidates
        self.w, self.numa, self.need = w, gpus.numa, need
        self.deg = [0] * len(w)
        for i in members:
            self.deg[i] = sum(w[i][j] for j in members)
        self.m = sum(self.deg) // 2 + 1
        self.a = (len(members) + 1) * self.m + 2
        self.required = required
        self.candidates = candidates
        self.twin = _twin_classes(w, gpus.numa, members, candidates)
        # order[j]: j's scores to the other candidates, best first, for the bound on pairs not yet picked.
        self.order: list[list[tuple[int, int]]] = [[] for _ in w]
        for j in candidates:
            self.order[j] = sorted(((w[j][x], x) for x in candidates if x != j), reverse=True)
        self.target = -1
        self.best: list[int] | None = None

    def run(self) -> list[int]:
        gain = [0] * len(self.w)
        for r in self.required:
            for j in self.candidates:
                gain[j] += self.w[r][j]
        score = sum(self.w[a][b] for i, a in enumerate(self.required) for b in self.required[i + 1:])
        base2 = 2 * (self.a * score - sum(self.deg[r] for r in self.required))
        nodes = frozenset(self.numa[r] for r in self.required)
        # Pass 1 finds the best key, most promising GPUs first; pass 2 the first set in index order with it.
        self.target = self._greedy(gain, base2, nodes)
        self._visit([], self.candidates, gain, base2, nodes, ordered=False)
        self._visit([], self.candidates, gain, base2, nodes, ordered=True)
        assert self.best is not None  # pass 1 proved a set with the target key exists
        return self.best

    def _values(self, options: list[int], gain: list[int], left: int) -> list[int]:
        """Per option, twice the most it can add: its links to what is picked, its best ``left − 1`` to the options."""
        a, deg, order = self.a, self.deg, self.order
        inside = set(options)
        want = left - 1
        out = []
        for j in options:
            best = 0
            if want:
                got = 0
                for s, x in order[j]:
                    if x in inside:
                        best += s
                        got += 1
                        if got == want:
                            break
            out.append(2 * a * gain[j] - 2 * deg[j] + a * best)
        return out

    def _leaf_key(self, base2: int, nodes: frozenset[int]) -> int:
        return base2 // 2 - len(nodes) * self.m

    def _greedy(self, gain: list[int], base2: int, nodes: frozenset[int]) -> int:
        gain, left = list(gain), list(self.candidates)
        for _ in range(self.need):
            c = max(left, key=lambda j: (self.a * gain[j] - self.deg[j], -j))
            left.remove(c)
            base2 += 2 * (self.a * gain[c] - self.deg[c])
            nodes = nodes | {self.numa[c]}
            for j in left:
                gain[j] += self.w[c][j]
        return self._leaf_key(base2, nodes)

    def _visit(self, picked: list[int], options: list[int], gain: list[int], base2: int,
               nodes: frozenset[int], *, ordered: bool) -> bool:
        """Search below ``picked``; ``base2`` is twice its key without the NUMA term. True: pass 2 is done."""
        left = self.need - len(picked)
        if left == 0:
            key = self._leaf_key(base2, nodes)
            if ordered and key == self.target:
                self.best = list(picked)
                return True
            self.target = max(self.target, key)
            return False
        if len(options) < left:
            return False
        if left == 1:  # the leaves, without a call each
            return self._last(picked, options, gain, base2, nodes, ordered=ordered)
        values = self._values(options, gain, left)
        bound = (base2 + sum(sorted(values, reverse=True)[:left])) // 2 - max(len(nodes), 1) * self.m
        # Pass 1 needs only a better key; pass 2 needs the target itself.
        if bound < self.target or (bound == self.target and not ordered):
            return False
        if not ordered:
            # Stable, so twins (equal values) stay in index order, as the twin rule needs.
            options = [j for _, j in sorted(zip(values, options), key=lambda vj: -vj[0])]
        banned: set[int] = set()
        a, deg, w, twin = self.a, self.deg, self.w, self.twin
        for pos, c in enumerate(options):
            if len(options) - pos < left:
                break
            if twin[c] in banned:
                continue
            rest = [j for j in options[pos + 1:] if twin[j] not in banned]
            row = w[c]
            child = list(gain)
            for j in rest:
                child[j] += row[j]
            if self._visit(picked + [c], rest, child, base2 + 2 * (a * gain[c] - deg[c]),
                           nodes | {self.numa[c]}, ordered=ordered):
                return True
            banned.add(twin[c])  # c is left out from here on, and so are its later twins
        return False

    def _last(self, picked: list[int], options: list[int], gain: list[int], base2: int,
              nodes: frozenset[int], *, ordered: bool) -> bool:
        a, deg, numa, m = self.a, self.deg, self.numa, self.m
        count = len(nodes)
        for c in options:  # twins of a skipped option tie with it, so they never matter here
            key = (base2 + 2 * (a * gain[c] - deg[c])) // 2 - (count + (numa[c] not in nodes)) * m
            if ordered and key == self.target:
                self.best = picked + [c]
                return True
            if key > self.target:
                self.target = key
        return False


def _twin_classes(w: Sequence[Sequence[int]], numa: Sequence[int], members: list[int],
                  candidates: list[int]) -> dict[int, int]:
    """Candidate → the lowest candidate it is interchangeable with (itself when it has no twin)."""
    classes: dict[int, int] = {}
    reps: list[int] = []
    for j in candidates:
        for r in reps:
            if numa[r] == numa[j] and all(w[r][x] == w[j][x] for x in members if x != r and x != j):
                classes[j] = r
                break
        else:
            reps.append(j)
            classes[j] = j
    return classes

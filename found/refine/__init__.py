"""Bilateral-solver refinement (FOUND / TokenCut), batched in torch."""
from .bilateral import SolveOutput, bilateral_solve, solve_batch

__all__ = ["SolveOutput", "bilateral_solve", "solve_batch"]

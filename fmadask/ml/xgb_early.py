"""XGBoost that stops adding rounds when they stop helping, on a part of its own training rows."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from xgboost import XGBClassifier


class EarlyStoppingXGBClassifier(XGBClassifier):
    """``XGBClassifier`` that holds out 10 % of the rows it is given to stop early.

    ``fit(X, y)`` trains on a stratified 90 % and evaluates each round on the other 10 %; with
    ``early_stopping_rounds`` set, training stops after that many rounds without progress and
    ``predict`` uses the best round. The held-out part is drawn with ``random_state``, so a fit
    is repeatable, and it comes from the rows passed to ``fit`` only (inside a cross-validation
    fold, from that fold's training part), so no score sees its own rows.
    """

    def fit(self, X: Any, y: Any, *, sample_weight: Any = None, **kwargs: Any
            ) -> EarlyStoppingXGBClassifier:
        y = np.asarray(y)
        rows = np.arange(len(y))
        counts = np.bincount(y)
        # Stratify when every class can spare a row for the held-out part.
        stratify = y if counts[counts > 0].min() >= 2 else None
        fit_rows, held_out = train_test_split(rows, test_size=0.1, stratify=stratify,
                                              random_state=self.random_state)
        weights = None if sample_weight is None else np.asarray(sample_weight)
        return super().fit(X[fit_rows], y[fit_rows],
                           sample_weight=None if weights is None else weights[fit_rows],
                           eval_set=[(X[held_out], y[held_out])],
                           sample_weight_eval_set=None if weights is None else [weights[held_out]],
                           verbose=False, **kwargs)

#!/usr/bin/env python3
"""Would ML-100K's user demographics (u.user: age, gender, occupation, zip code) help a ranker
predict `like` (rating >= 4) for users it has never seen? Measured without any model of genrec:

  scripts/ml100k_user_features.py [ML100K_DIR]     (default ../shared/data/movielens/ml-100k)

The split is genrec's temporal split (data.split = "temporal", valid and test fractions 0.1: cuts
at the timestamps of the 80% and 90% quantiles of all events); everything is fitted on the
events before the first cut (a ranker's training data). For the candidates of users with no
event before their period's cut (the `no_history/...` group of `genrec eval`), it prints the
like AUC of

  item prior          the item's smoothed like rate (logit)
  + FIELD             plus the logit offset of the user's group on that field (smoothed rate)
  + all fields        plus all four offsets (naive-Bayes style)
  logistic            a logistic regression on top of the item prior: user fields one-hot and
                      their interactions with the item's genres (u.item), L2-regularised, SGD

Standard library only.
"""
import collections
import math
import random
import sys
from pathlib import Path


def logit(p):
    return math.log(p / (1 - p))


def auc(scores, labels):
    pairs = sorted(zip(scores, labels))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # ties share their mean rank
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def main(argv):
    root = Path(argv[1] if len(argv) > 1 else "../shared/data/movielens/ml-100k")
    events = []
    for line_no, line in enumerate(open(root / "u.data"), 1):
        columns = line.split("\t")
        if len(columns) != 4:
            sys.exit(f"{root / 'u.data'}:{line_no}: expected 4 tab-separated fields, got {len(columns)}")
        events.append(tuple(int(c) for c in columns))
    events.sort(key=lambda e: e[3])
    n = len(events)
    valid_cut, test_cut = events[int(0.8 * n)][3], events[int(0.9 * n)][3]

    users = {}
    for line in open(root / "u.user", encoding="latin-1"):
        uid, age, gender, occupation, zip_code = line.strip().split("|")
        users[int(uid)] = {"age": min(int(age) // 10, 6), "gender": gender, "occupation": occupation,
                           "zip": zip_code[:1]}
    genres = {}
    for line in open(root / "u.item", encoding="latin-1"):
        columns = line.rstrip("\n").split("|")
        genres[int(columns[0])] = [g for g, flag in enumerate(columns[5:]) if flag == "1"]

    train = [e for e in events if e[3] < valid_cut]
    first_time = {}
    for e in events:
        first_time.setdefault(e[0], e[3])
    base_rate = sum(e[2] >= 4 for e in train) / len(train)

    def smoothed_rates(key, prior):
        counts = collections.defaultdict(lambda: [0, 0])
        for e in train:
            c = counts[key(e)]
            c[0] += e[2] >= 4
            c[1] += 1
        return {k: (pos + prior * base_rate) / (total + prior) for k, (pos, total) in counts.items()}

    item_rate = smoothed_rates(lambda e: e[1], 20)
    fields = ["gender", "age", "occupation", "zip"]
    field_rate = {f: smoothed_rates(lambda e, f=f: users[e[0]][f], 50) for f in fields}

    def prior(e):
        return logit(item_rate.get(e[1], base_rate))

    def offset(e, f):
        return logit(field_rate[f].get(users[e[0]][f], base_rate)) - logit(base_rate)

    def features(e):
        u = users[e[0]]
        out = [f"{f}={u[f]}" for f in fields]
        out += [f"{f}={u[f]}|g{g}" for f in ("gender", "age") for g in genres.get(e[1], [])]
        return out

    # Logistic regression on the item prior's logit: w · one-hot features, L2, plain SGD.
    rng = random.Random(0)
    weights = collections.defaultdict(float)
    lr, l2 = 0.01, 1e-2
    order = list(train)
    for epoch in range(5):
        rng.shuffle(order)
        for e in order:
            feats = features(e)
            z = prior(e) + sum(weights[k] for k in feats)
            grad = 1 / (1 + math.exp(-z)) - (e[2] >= 4)
            for k in feats:
                weights[k] -= lr * (grad + l2 * weights[k])

    for part, (begin, end) in (("valid", (valid_cut, test_cut)), ("test", (test_cut, math.inf))):
        cands = [e for e in events if begin <= e[3] < end and first_time[e[0]] >= begin]
        labels = [int(e[2] >= 4) for e in cands]
        print(f"{part}: {len(cands)} candidates of {len({e[0] for e in cands})} users without history, "
              f"positive rate {sum(labels) / len(labels):.3f}")
        print(f"  item prior            AUC {auc([prior(e) for e in cands], labels):.4f}")
        for f in fields:
            print(f"  + {f:<19} AUC {auc([prior(e) + offset(e, f) for e in cands], labels):.4f}")
        print(f"  + all fields          AUC {auc([prior(e) + sum(offset(e, f) for f in fields) for e in cands], labels):.4f}")
        scores = [prior(e) + sum(weights[k] for k in features(e)) for e in cands]
        print(f"  logistic              AUC {auc(scores, labels):.4f}")


if __name__ == "__main__":
    main(sys.argv)

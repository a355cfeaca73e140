"""model2vec from a local teacher + scikit-learn LogisticRegression on English SIB-200 train; accuracy on test.

Runs in benchmarks/.venv-model2vec (benchmarks/setup_model2vec_env.sh), called by static_vs_model2vec.py:

    benchmarks/.venv-model2vec/bin/python benchmarks/model2vec_peer.py --teacher DIR --tokens-from STUDENT_DIR \
        --data-dir ../shared/data --out FILE.json [--pca-dims 256] [--full-vocab]

--full-vocab runs `model2vec.distill.distill(model_name=DIR, pca_dims=...)` itself: every one of the teacher's
250k tokens goes through the teacher (about 40 minutes on 2 busy cores). By default the same three steps run
with model2vec's own functions (`create_embeddings`, `compute_weights`, `apply_pca`, in distill_from_model's
order) on the vocabulary the static student kept (--tokens-from: its trimmed tokenizer), so that both start from
the same tokens; the StaticModel then tokenizes with that tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def kept_teacher_ids(teacher_tokenizer, student_dir: Path) -> tuple[list[int], object]:
    from tokenizers import Tokenizer

    student = Tokenizer.from_file(str(student_dir / "tokenizer.json"))
    pieces = [piece for piece, _ in sorted(student.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])]
    return teacher_tokenizer.convert_tokens_to_ids(pieces), student


def static_model(args):
    from model2vec import StaticModel
    from model2vec.distill import distill
    from model2vec.distill.inference import apply_pca, compute_weights, create_embeddings
    from transformers import AutoModel, AutoTokenizer

    if args.full_vocab:
        return distill(model_name=str(args.teacher), pca_dims=args.pca_dims, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    model = AutoModel.from_pretrained(args.teacher)
    ids, student_tokenizer = kept_teacher_ids(tokenizer, args.tokens_from)
    bos, eos = [tokenizer.cls_token_id], [tokenizer.sep_token_id]
    vectors = create_embeddings(model=model, tokenized=[bos + [i] + eos for i in ids], device="cpu",
                                pad_token_id=tokenizer.pad_token_id or 0, pooling="mean")
    weights = compute_weights(len(vectors), sif_coefficient=1e-4)
    vectors = apply_pca(vectors, args.pca_dims) * weights[:, None]
    return StaticModel(vectors=vectors.astype("float32"), tokenizer=student_tokenizer, normalize=True,
                       config={"model_type": "model2vec", "normalize": True, "hidden_dim": vectors.shape[1]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--tokens-from", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--full-vocab", action="store_true")
    args = parser.parse_args(argv)

    import model2vec
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from kdcompress.data.tasks import get_task

    started = time.perf_counter()
    model = static_model(args)
    distill_s = time.perf_counter() - started
    task = get_task("sib200")
    train = task.load("train", "en", data_dir=args.data_dir)
    head = LogisticRegression(max_iter=2000, C=float(os.environ.get("M2V_C", "1.0")))
    head.fit(model.encode([e.text for e in train]), [e.label for e in train])
    per_language = {}
    for lang in task.languages:
        test = task.load("test", lang, data_dir=args.data_dir)
        predicted = head.predict(model.encode([e.text for e in test]))
        per_language[lang] = float(np.mean(predicted == np.array([e.label for e in test])))
    record = {"per_language": per_language, "distill_seconds": round(distill_s, 1), "pca_dims": args.pca_dims,
              "vocabulary": "full (model2vec.distill.distill)" if args.full_vocab else "the static student's kept tokens",
              "tokens": int(model.embedding.shape[0]),
              "versions": {"model2vec": model2vec.__version__, "scikit-learn": sklearn.__version__}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "per_language"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! A tiny BERT folder written here in PyTorch's layout (a `bert.` prefix, `[out, in]` linear
//! weights, LayerNorm weight/bias, an MLM head to ignore): it loads, its `[CLS]` feature does
//! not depend on padding, frozen layers do not train, and every broken folder is one clear
//! error. Equality with `transformers` is checked in `.ci/run` (`bert_equals_transformers`).

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::rng;

pub(crate) const WORDS: [&str; 14] = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "mild",
    "medial",
    "joint",
    "space",
    "narrowing",
    "no",
    "effusion",
    "osteophytes",
    ".",
];

/// Writes a random BERT (hidden 8, 2 heads, `layers` layers) with its `vocab.txt`.
pub(crate) fn write_tiny_bert(dir: &Path, layers: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let (h, inter, vocab, pos) = (8usize, 16usize, WORDS.len(), 16usize);
    let mut r = rng::stream("tiny-bert", &[], seed);
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut put = |name: &str, shape: Vec<usize>, scale: f64| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| (rng::normal(&mut r) * scale) as f32)
            .collect();
        tensors.insert(name.to_string(), (shape, v));
    };
    put(
        "bert.embeddings.word_embeddings.weight",
        vec![vocab, h],
        0.5,
    );
    put(
        "bert.embeddings.position_embeddings.weight",
        vec![pos, h],
        0.5,
    );
    put(
        "bert.embeddings.token_type_embeddings.weight",
        vec![2, h],
        0.5,
    );
    put("bert.embeddings.LayerNorm.weight", vec![h], 0.1);
    put("bert.embeddings.LayerNorm.bias", vec![h], 0.1);
    for l in 0..layers {
        let p = format!("bert.encoder.layer.{l}");
        for m in ["query", "key", "value"] {
            put(&format!("{p}.attention.self.{m}.weight"), vec![h, h], 0.3);
            put(&format!("{p}.attention.self.{m}.bias"), vec![h], 0.1);
        }
        put(
            &format!("{p}.attention.output.dense.weight"),
            vec![h, h],
            0.3,
        );
        put(&format!("{p}.attention.output.dense.bias"), vec![h], 0.1);
        put(
            &format!("{p}.attention.output.LayerNorm.weight"),
            vec![h],
            0.1,
        );
        put(
            &format!("{p}.attention.output.LayerNorm.bias"),
            vec![h],
            0.1,
        );
        put(
            &format!("{p}.intermediate.dense.weight"),
            vec![inter, h],
            0.3,
        );
        put(&format!("{p}.intermediate.dense.bias"), vec![inter], 0.1);
        put(&format!("{p}.output.dense.weight"), vec![h, inter], 0.3);
        put(&format!("{p}.output.dense.bias"), vec![h], 0.1);
        put(&format!("{p}.output.LayerNorm.weight"), vec![h], 0.1);
        put(&format!("{p}.output.LayerNorm.bias"), vec![h], 0.1);
    }
    put("bert.pooler.dense.weight", vec![h, h], 0.3);
    put("bert.pooler.dense.bias", vec![h], 0.1);
    put("cls.predictions.bias", vec![vocab], 0.1);
    // LayerNorm scales near 1, as trained ones are.
    for (name, (_, v)) in tensors.iter_mut() {
        if name.ends_with("LayerNorm.weight") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
    }
    write_safetensors(&dir.join(WEIGHTS), &tensors);
    std::fs::write(dir.join("vocab.txt"), WORDS.join("\n") + "\n").unwrap();
    let config = serde_json::json!({
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": h,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": inter,
        "max_position_embeddings": pos,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
    });
    std::fs::write(dir.join(CONFIG), config.to_string()).unwrap();
}

pub(crate) fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, _))| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    &bytes[k],
                )
                .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

pub(crate) fn read_safetensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

fn ids(rows: &[&[i64]], len: usize) -> (Tensor<2, Int>, Tensor<2, Bool>) {
    let device = Device::flex();
    let mut v = Vec::new();
    let mut m = Vec::new();
    for r in rows {
        v.extend(r.iter().copied().chain(std::iter::repeat(0)).take(len));
        m.extend((0..len).map(|i| i >= r.len()));
    }
    (
        Tensor::from_data(TensorData::new(v, [rows.len(), len]), &device),
        Tensor::from_data(TensorData::new(m, [rows.len(), len]), &device),
    )
}

#[test]
fn a_tiny_bert_loads_and_its_cls_feature_ignores_padding() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), 2, 1);
    let bert = Bert::load(dir.path(), &Device::flex()).unwrap();
    assert_eq!(bert.encoder.layer.len(), 2);
    assert!(bert.pooler.is_some());
    assert_eq!((bert.hidden_size(), bert.max_len()), (8, 16));
    // The embedding rows are the file's: the word embedding of token 5, untransposed.
    let file = read_safetensors(&dir.path().join(WEIGHTS));
    let words = bert
        .embeddings
        .word_embeddings
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(
        &words[40..48],
        &file["bert.embeddings.word_embeddings.weight"].1[40..48]
    );
    // A linear weight is the file's transposed ([out, in] → [in, out]).
    let q = bert.encoder.layer[0].attention.self_attn.query.weight.val();
    let q = q.into_data().try_to_vec::<f32>().unwrap();
    let fq = &file["bert.encoder.layer.0.attention.self.query.weight"].1;
    assert_eq!(
        q[1], fq[8],
        "burn's [in, out] element (0, 1) is PyTorch's (1, 0)"
    );

    let text: &[i64] = &[2, 5, 6, 9, 3];
    let (a, pa) = ids(&[text], 5);
    let (b, pb) = ids(&[text, &[2, 10, 11, 3]], 12);
    let ya = bert.cls(a, pa).into_data().try_to_vec::<f32>().unwrap();
    let yb = bert.cls(b, pb).into_data().try_to_vec::<f32>().unwrap();
    for (x, y) in ya.iter().zip(&yb[..8]) {
        assert!(
            (x - y).abs() < 1e-5,
            "padding changed the [CLS] feature: {ya:?} vs {yb:?}"
        );
    }
    assert!(ya.iter().zip(&yb[8..]).any(|(x, y)| (x - y).abs() > 1e-3));
}

#[test]
fn freezing_keeps_the_embeddings_and_the_first_layers_out_of_training() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), 2, 1);
    let device = Device::flex().autodiff();
    let bert = Bert::load(dir.path(), &device).unwrap().freeze(1);
    let grad = |l: &Linear| l.weight.val().is_require_grad();
    assert!(
        !bert
            .embeddings
            .word_embeddings
            .weight
            .val()
            .is_require_grad()
    );
    assert!(!grad(&bert.encoder.layer[0].attention.self_attn.query));
    assert!(grad(&bert.encoder.layer[1].attention.self_attn.query));
    assert!(grad(&bert.encoder.layer[1].output.dense));
}

#[test]
fn broken_folders_are_clear_errors() {
    let make = |edit: &dyn Fn(&Path)| {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), 2, 1);
        edit(dir.path());
        let err = Bert::load(dir.path(), &Device::flex())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        (dir, err)
    };
    fn edit_weights(f: impl Fn(&mut BTreeMap<String, (Vec<usize>, Vec<f32>)>)) -> impl Fn(&Path) {
        move |d: &Path| {
            let mut t = read_safetensors(&d.join(WEIGHTS));
            f(&mut t);
            write_safetensors(&d.join(WEIGHTS), &t);
        }
    }
    let (_d, err) = make(&edit_weights(|t| {
        t.remove("bert.encoder.layer.1.output.dense.weight");
    }));
    assert!(
        err.contains("missing tensors") && err.contains("encoder.layer.1.output.dense.weight"),
        "{err}"
    );
    let (_d, err) = make(&edit_weights(|t| {
        t.insert(
            "bert.encoder.layer.0.intermediate.dense.weight".into(),
            (vec![12, 8], vec![0.0; 96]),
        );
    }));
    assert!(
        err.contains("wrong tensors") && err.contains("intermediate"),
        "{err}"
    );
    let (_d, err) = make(&|d: &Path| {
        let c = std::fs::read_to_string(d.join(CONFIG)).unwrap();
        std::fs::write(d.join(CONFIG), c.replace("\"bert\"", "\"roberta\"")).unwrap();
    });
    assert!(err.contains("model_type is `roberta`"), "{err}");
    let (_d, err) = make(&|d: &Path| {
        let c = std::fs::read_to_string(d.join(CONFIG)).unwrap();
        std::fs::write(
            d.join(CONFIG),
            c.replace("\"num_hidden_layers\":2", "\"num_hidden_layers\":1"),
        )
        .unwrap();
    });
    assert!(err.contains("beyond config.json"), "{err}");
    let (_d, err) = make(&|d: &Path| std::fs::remove_file(d.join(WEIGHTS)).unwrap());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn the_tokenizer_must_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), 1, 1);
    let cfg = BertConfig::read(dir.path()).unwrap();
    let tok = crate::train::text::bert_tokenizer(dir.path(), &cfg, 6).unwrap();
    let enc = tok
        .encode("Mild medial joint space narrowing, no effusion.", true)
        .unwrap();
    // [CLS] mild medial joint space [SEP]: lower-cased, truncated to 6 with [SEP] kept.
    assert_eq!(enc.get_ids(), &[2, 5, 6, 7, 8, 3]);
    // A vocabulary larger than the model's embedding table.
    let mut words = WORDS.to_vec();
    words.push("extra");
    std::fs::write(dir.path().join("vocab.txt"), words.join("\n")).unwrap();
    let err = crate::train::text::bert_tokenizer(dir.path(), &cfg, 6).unwrap_err();
    assert!(err.to_string().contains("vocab_size is 14"), "{err}");
    std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();
    let err = crate::train::text::bert_tokenizer(dir.path(), &cfg, 6).unwrap_err();
    assert!(
        err.to_string()
            .contains("neither tokenizer.json nor vocab.txt"),
        "{err}"
    );
}

/// The folder `tests/bert/make_tiny_bert.py` wrote (`KTRACK_TEST_BERT`).
#[allow(clippy::disallowed_methods)] // the suite's own setting, not ktrack's
fn transformers_folder() -> std::path::PathBuf {
    std::env::var_os("KTRACK_TEST_BERT")
        .expect("KTRACK_TEST_BERT names a folder written by tests/bert/make_tiny_bert.py")
        .into()
}

#[test]
#[ignore = "needs a BERT saved by transformers (tests/bert/make_tiny_bert.py); .ci/run runs it"]
fn bert_equals_transformers() {
    let dir = transformers_folder();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let texts: Vec<&str> = expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let max_len = expected["max_len"].as_u64().unwrap() as usize;
    let device = Device::flex();
    let cfg = BertConfig::read(&dir).unwrap();
    let tok = crate::train::text::bert_tokenizer(&dir, &cfg, max_len).unwrap();
    let (ids, pad) =
        crate::train::text::encode_batch(&tok, &texts, max_len, true, &device).unwrap();
    let want_ids: Vec<i64> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
        .collect();
    let got_ids: Vec<i64> = ids.clone().into_data().iter::<i64>().collect();
    assert_eq!(got_ids, want_ids, "tokenizer.json's ids");
    let want_pad: Vec<bool> = expected["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64() == Some(0)))
        .collect();
    assert_eq!(
        pad.clone().into_data().try_to_vec::<bool>().unwrap(),
        want_pad
    );

    // The same ids from vocab.txt alone (the WordPiece tokenizer ktrack builds).
    let bare = tempfile::tempdir().unwrap();
    for f in ["config.json", "vocab.txt", "tokenizer_config.json"] {
        if dir.join(f).is_file() {
            std::fs::copy(dir.join(f), bare.path().join(f)).unwrap();
        }
    }
    let vocab_tok = crate::train::text::bert_tokenizer(bare.path(), &cfg, max_len).unwrap();
    let (ids2, _) =
        crate::train::text::encode_batch(&vocab_tok, &texts, max_len, true, &device).unwrap();
    assert_eq!(
        ids2.into_data().iter::<i64>().collect::<Vec<_>>(),
        want_ids,
        "vocab.txt's ids"
    );

    let bert = Bert::load(&dir, &device).unwrap();
    let out = bert.forward(ids, pad);
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                x => out.push(x.as_f64().unwrap()),
            }
        }
        let mut out = Vec::new();
        walk(v, &mut out);
        out
    };
    let gap = |got: Tensor<2>, want: &[f64]| {
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max)
    };
    let [b, len, h] = out.hidden.dims();
    let hidden = gap(out.hidden.reshape([b * len, h]), &flat(&expected["hidden"]));
    let pooled = gap(
        out.pooled.expect("a BertModel has a pooler"),
        &flat(&expected["pooled"]),
    );
    eprintln!("ktrack vs transformers: hidden states max |Δ| {hidden:.2e}, pooled {pooled:.2e}");
    assert!(
        hidden < 1e-5 && pooled < 1e-5,
        "hidden {hidden:e}, pooled {pooled:e}"
    );
}

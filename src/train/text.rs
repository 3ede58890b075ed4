//! Report text for image-text pretraining: a word-level tokenizer trained on the impressions
//! with the `tokenizers` crate (saved as `tokenizer.json`), a user's `tokenizer.json`, or a BERT
//! folder's WordPiece tokenizer (its `tokenizer.json`, else built from `vocab.txt` as
//! `BertTokenizerFast` builds it), and batches of padded token ids.

use std::path::Path;

use burn::prelude::*;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainerBuilder};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder, TokenizerImpl};

use super::Error;

pub const PAD: &str = "[PAD]";
pub const UNK: &str = "[UNK]";

/// Trains a lower-cased word-level tokenizer (vocabulary capped at `vocab_size`).
pub fn train_tokenizer(corpus: &[String], vocab_size: usize) -> Result<Tokenizer, Error> {
    let err = |e: tokenizers::Error| Error::Data(format!("tokenizer: {e}"));
    let mut trainer = WordLevelTrainerBuilder::default()
        .min_frequency(1)
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(PAD, true),
            AddedToken::from(UNK, true),
        ])
        .build()
        .map_err(|e| Error::Data(format!("tokenizer: {e}")))?;
    let model = WordLevel::builder()
        .unk_token(UNK.into())
        .build()
        .map_err(err)?;
    let mut tok: TokenizerImpl<
        WordLevel,
        Lowercase,
        Whitespace,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(Some(Lowercase))
        .with_pre_tokenizer(Some(Whitespace {}))
        .build()
        .map_err(err)?;
    tok.train(&mut trainer, corpus.iter()).map_err(err)?;
    Ok(Tokenizer::from(tok))
}

/// The tokenizer of a BERT folder, checked against its model: every id inside the model's
/// vocabulary, `[CLS]`, `[SEP]` and `[PAD]` known, and `[CLS] … [SEP]` added around a text.
/// Encodings are truncated to `max_len` with the `[SEP]` kept.
pub fn bert_tokenizer(
    dir: &Path,
    cfg: &crate::model::bert::BertConfig,
    max_len: usize,
) -> Result<Tokenizer, Error> {
    use crate::model::bert::Error as BertError;
    let json = dir.join("tokenizer.json");
    let vocab = dir.join("vocab.txt");
    let (path, mut tok) = if json.is_file() {
        (json.clone(), load_tokenizer(&json)?)
    } else if vocab.is_file() {
        (vocab.clone(), wordpiece(dir, &vocab)?)
    } else {
        return Err(BertError::Folder {
            dir: dir.to_path_buf(),
            message: "has neither tokenizer.json nor vocab.txt".into(),
        }
        .into());
    };
    let bad = |message: String| -> Error {
        BertError::Tokenizer {
            path: path.clone(),
            message,
        }
        .into()
    };
    let size = tok
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |m| *m as usize + 1);
    if size > cfg.vocab_size {
        return Err(bad(format!(
            "it has token ids up to {} but config.json's vocab_size is {}",
            size - 1,
            cfg.vocab_size
        )));
    }
    for special in ["[CLS]", "[SEP]", PAD] {
        if tok.token_to_id(special).is_none() {
            return Err(bad(format!("it has no {special} token")));
        }
    }
    let probe = tok
        .encode("x", true)
        .map_err(|e| bad(format!("cannot encode: {e}")))?;
    if probe.get_ids().first().copied() != tok.token_to_id("[CLS]") {
        return Err(bad(
            "it does not add [CLS] … [SEP] around a text (no BERT post-processor)".into(),
        ));
    }
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| bad(e.to_string()))?;
    tok.with_padding(None);
    Ok(tok)
}

/// A BERT WordPiece tokenizer from `vocab.txt` (lower-casing as `tokenizer_config.json`'s
/// `do_lower_case` says, default true).
fn wordpiece(dir: &Path, vocab: &Path) -> Result<Tokenizer, Error> {
    use tokenizers::Model;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;
    let lower = std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["do_lower_case"].as_bool())
        .unwrap_or(true);
    let err = |e: tokenizers::Error| Error::file("load tokenizer", vocab)(e.to_string());
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token(UNK.into())
        .build()
        .map_err(err)?;
    let id = |t: &str| model.token_to_id(t);
    let (Some(cls), Some(sep)) = (id("[CLS]"), id("[SEP]")) else {
        return Err(crate::model::bert::Error::Tokenizer {
            path: vocab.to_path_buf(),
            message: "it has no [CLS] or no [SEP] token".into(),
        }
        .into());
    };
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lower)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
    Ok(tok)
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, Error> {
    Tokenizer::from_file(path).map_err(|e| Error::file("load tokenizer", path)(e.to_string()))
}

pub fn save_tokenizer(tok: &Tokenizer, path: &Path) -> Result<(), Error> {
    let json = tok
        .to_string(true)
        .map_err(|e| Error::file("save tokenizer", path)(e.to_string()))?;
    super::checkpoint::write_atomic(path, json.as_bytes())
}

/// The id used for padding (`[PAD]`, else 0).
pub fn pad_id(tok: &Tokenizer) -> u32 {
    tok.token_to_id(PAD).unwrap_or(0)
}

/// Token ids `[batch, max_len]` and the padding mask (true where padded); `special`: with
/// the tokenizer's special tokens (BERT's `[CLS] … [SEP]`).
pub fn encode_batch(
    tok: &Tokenizer,
    texts: &[&str],
    max_len: usize,
    special: bool,
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Bool>), Error> {
    let pad = pad_id(tok);
    let mut ids = Vec::with_capacity(texts.len() * max_len);
    let mut mask = Vec::with_capacity(texts.len() * max_len);
    for t in texts {
        let enc = tok
            .encode(*t, special)
            .map_err(|e| Error::Data(format!("tokenizer: {e}")))?;
        let mut row: Vec<i64> = enc
            .get_ids()
            .iter()
            .take(max_len)
            .map(|&i| i64::from(i))
            .collect();
        if row.is_empty() {
            row.push(i64::from(tok.token_to_id(UNK).unwrap_or(pad)));
        }
        let n = row.len();
        row.resize(max_len, i64::from(pad));
        ids.extend(row);
        mask.extend((0..max_len).map(|i| i >= n));
    }
    let b = texts.len();
    Ok((
        Tensor::<2, Int>::from_data(TensorData::new(ids, [b, max_len]), device),
        Tensor::<2, Bool>::from_data(TensorData::new(mask, [b, max_len]), device),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_encodes_and_round_trips() {
        let corpus: Vec<String> = vec![
            "Mild medial joint space narrowing.".into(),
            "No acute fracture.".into(),
        ];
        let tok = train_tokenizer(&corpus, 100).unwrap();
        assert_eq!(pad_id(&tok), 0);
        let (ids, pad) = encode_batch(
            &tok,
            &["medial narrowing", "no fracture at all"],
            6,
            false,
            &Device::flex(),
        )
        .unwrap();
        let ids: Vec<i64> = ids.into_data().iter::<i64>().collect();
        assert_eq!(ids.len(), 12);
        assert!(ids[2] == 0 && ids[0] > 1);
        let pad = pad.into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(&pad[..3], &[false, false, true]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        save_tokenizer(&tok, &p).unwrap();
        assert_eq!(
            load_tokenizer(&p).unwrap().get_vocab_size(true),
            tok.get_vocab_size(true)
        );
    }
}

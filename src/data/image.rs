//! Image decoding: PNG (8/16-bit), JPEG and DICOM into one grayscale float image in [0, 1].
//!
//! PNG and JPEG intensities are scaled linearly by their bit depth. DICOM pixel data goes
//! through the modality LUT, is inverted for MONOCHROME1 and windowed to its 5th..99th
//! percentile. The format is sniffed from the bytes, never from the file name.
//!
//! Hostile files are refused before they cost memory: the size is read from the header and
//! checked against a pixel limit (`--max-image-pixels`, default [`DEFAULT_MAX_PIXELS`]) before
//! any pixel buffer is allocated, and parallel decodes share a memory budget
//! (`--decode-memory-mb`, default [`DEFAULT_DECODE_BUDGET`]) so that many large images decoded
//! at once cannot multiply the peak. The command line sets both with [`set_limits`]. A JPEG without its end-of-image marker is
//! truncated and refused (decoders fill the missing part with grey and say nothing).

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;

/// A decoded grayscale image, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    /// Intensities in [0, 1].
    pub pixels: Vec<f32>,
    /// Bits per sample in the file (8 or 16 for PNG/JPEG; Bits Stored for DICOM).
    pub bit_depth: u16,
    /// Row and column spacing in mm, where the file states it (DICOM).
    pub pixel_spacing: Option<(f64, f64)>,
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Dicom,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Dicom => "DICOM",
        })
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a PNG, JPEG or DICOM file")]
    Unknown,
    #[error("is not a valid {format}: {message}")]
    Decode { format: Format, message: String },
    #[error("empty image ({width}x{height})")]
    Empty { width: u32, height: u32 },
    #[error(
        "is a {format} of {width}x{height} pixels, more than the limit of {max} pixels (set KTRACK_MAX_IMAGE_PIXELS to allow larger images)"
    )]
    TooLarge {
        format: Format,
        width: u64,
        height: u64,
        max: u64,
    },
    #[error("is a truncated {format}: {what}")]
    Truncated { format: Format, what: &'static str },
}

/// The default pixel limit: 100 million pixels (10,000²), far above any radiograph.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// The default memory budget of decodes running at once, in bytes (2 GiB).
pub const DEFAULT_DECODE_BUDGET: u64 = 2 << 30;

/// Bytes a decode may hold per pixel: the decoder's native buffer (up to 16-bit RGBA) and the
/// float output.
const BYTES_PER_PIXEL: u64 = 12;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);
static DECODE_BUDGET: AtomicU64 = AtomicU64::new(DEFAULT_DECODE_BUDGET);

/// Sets the pixel limit and the decode memory budget (bytes) for this process.
pub fn set_limits(max_pixels: u64, decode_budget: u64) {
    MAX_PIXELS.store(max_pixels, Ordering::Relaxed);
    DECODE_BUDGET.store(decode_budget.max(1), Ordering::Relaxed);
}

/// The pixel limit in force.
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

fn decode_budget() -> u64 {
    DECODE_BUDGET.load(Ordering::Relaxed)
}

/// A share of the decode budget, given back when dropped.
struct Permit(u64);

static IN_FLIGHT: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
static RELEASED: std::sync::Condvar = std::sync::Condvar::new();

impl Permit {
    /// Waits until `bytes` fit in the budget (an image larger than the whole budget waits
    /// until nothing else decodes, then runs alone).
    fn acquire(bytes: u64) -> Permit {
        let budget = decode_budget();
        let want = bytes.min(budget);
        let mut used = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + want > budget {
            used = RELEASED.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += want;
        Permit(want)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut used = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.0;
        RELEASED.notify_all();
    }
}

/// Width and height from the file's header, without decoding pixels.
pub fn dimensions(bytes: &[u8]) -> Result<(Format, u64, u64), Error> {
    let format = sniff(bytes).ok_or(Error::Unknown)?;
    let (w, h) = match format {
        Format::Png | Format::Jpeg => {
            let fmt = if format == Format::Png {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), fmt)
                .into_dimensions()
                .map_err(|e| Error::Decode {
                    format,
                    message: e.to_string(),
                })?;
            (u64::from(w), u64::from(h))
        }
        Format::Dicom => {
            let obj = open_dicom(bytes)?;
            let int = |tag| -> Result<u64, Error> {
                obj.element(tag)
                    .ok()
                    .and_then(|e| e.to_int::<u32>().ok())
                    .map(u64::from)
                    .ok_or_else(|| Error::Decode {
                        format,
                        message: format!(
                            "it has no readable {} element",
                            if tag == tags::ROWS { "Rows" } else { "Columns" }
                        ),
                    })
            };
            let frames = obj
                .element(tags::NUMBER_OF_FRAMES)
                .ok()
                .and_then(|e| e.to_int::<u32>().ok())
                .map_or(1, u64::from)
                .max(1);
            (int(tags::COLUMNS)?, int(tags::ROWS)? * frames)
        }
    };
    Ok((format, w, h))
}

/// Refuses an image over the pixel limit and takes its share of the decode budget.
fn admit(bytes: &[u8]) -> Result<Permit, Error> {
    let (format, width, height) = dimensions(bytes)?;
    let max = max_pixels();
    if width.saturating_mul(height) > max {
        return Err(Error::TooLarge {
            format,
            width,
            height,
            max,
        });
    }
    if format == Format::Jpeg && !jpeg_complete(bytes) {
        return Err(Error::Truncated {
            format,
            what: "it ends before its end-of-image marker",
        });
    }
    Ok(Permit::acquire(width * height * BYTES_PER_PIXEL))
}

/// A complete JPEG ends with the EOI marker (FF D9), possibly followed by zero padding.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// Sniffs the format from magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(Format::Dicom)
    } else {
        None
    }
}

/// Checks that bytes decode as an image, without converting pixels (what an import needs).
///
/// PNG is decoded into its native buffer (inflate, CRCs, unfiltering); JPEG and DICOM take the
/// full [`decode`] path.
pub fn validate(bytes: &[u8]) -> Result<(u32, u32), Error> {
    let _permit = admit(bytes)?;
    match sniff(bytes).ok_or(Error::Unknown)? {
        Format::Png => {
            let err = |e: png::DecodingError| Error::Decode {
                format: Format::Png,
                message: e.to_string(),
            };
            let mut reader = png::Decoder::new(Cursor::new(bytes))
                .read_info()
                .map_err(err)?;
            let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
            let info = reader.next_frame(&mut buf).map_err(err)?;
            if info.width == 0 || info.height == 0 {
                return Err(Error::Empty {
                    width: info.width,
                    height: info.height,
                });
            }
            // Trailing chunks (and their CRCs) must be intact too.
            reader.finish().map_err(err)?;
            Ok((info.width, info.height))
        }
        _ => decode_admitted(bytes).map(|i| (i.width, i.height)),
    }
}

/// Decodes an image file's bytes.
pub fn decode(bytes: &[u8]) -> Result<GrayImage, Error> {
    let _permit = admit(bytes)?;
    decode_admitted(bytes)
}

fn decode_admitted(bytes: &[u8]) -> Result<GrayImage, Error> {
    let format = sniff(bytes).ok_or(Error::Unknown)?;
    let image = match format {
        Format::Png | Format::Jpeg => decode_raster(bytes, format)?,
        Format::Dicom => decode_dicom(bytes)?,
    };
    if image.width == 0 || image.height == 0 {
        return Err(Error::Empty {
            width: image.width,
            height: image.height,
        });
    }
    Ok(image)
}

fn decode_raster(bytes: &[u8], format: Format) -> Result<GrayImage, Error> {
    let fmt = match format {
        Format::Png => image::ImageFormat::Png,
        _ => image::ImageFormat::Jpeg,
    };
    let img = image::load_from_memory_with_format(bytes, fmt).map_err(|e| Error::Decode {
        format,
        message: e.to_string(),
    })?;
    let (width, height) = (img.width(), img.height());
    let sixteen = matches!(
        img.color(),
        image::ColorType::L16
            | image::ColorType::La16
            | image::ColorType::Rgb16
            | image::ColorType::Rgba16
    );
    let pixels: Vec<f32> = if sixteen {
        img.to_luma16()
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 65535.0)
            .collect()
    } else {
        img.to_luma8()
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect()
    };
    Ok(GrayImage {
        width,
        height,
        pixels,
        bit_depth: if sixteen { 16 } else { 8 },
        pixel_spacing: None,
        format,
    })
}

fn decode_dicom(bytes: &[u8]) -> Result<GrayImage, Error> {
    let err = |message: String| Error::Decode {
        format: Format::Dicom,
        message,
    };
    let obj = open_dicom(bytes)?;
    let decoded = obj.decode_pixel_data().map_err(|e| err(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(err(format!(
            "{} samples per pixel; knee radiographs must be grayscale",
            decoded.samples_per_pixel()
        )));
    }
    let (width, height) = (decoded.columns(), decoded.rows());
    let frame: Vec<f32> = decoded.to_vec_frame(0).map_err(|e| err(e.to_string()))?;
    let monochrome1 = decoded.photometric_interpretation().as_str() == "MONOCHROME1";
    let bit_depth = decoded.bits_stored();
    let pixel_spacing = [tags::PIXEL_SPACING, tags::IMAGER_PIXEL_SPACING]
        .into_iter()
        .find_map(|tag| {
            let v = obj.element(tag).ok()?.to_multi_float64().ok()?;
            (v.len() == 2).then(|| (v[0], v[1]))
        });
    // MONOCHROME1 shows low values bright: invert before windowing, so that the 5th/99th
    // percentiles are taken of the image as displayed.
    let frame = if monochrome1 {
        frame.into_iter().map(|v| -v).collect()
    } else {
        frame
    };
    let pixels = window_percentiles(&frame, 0.05, 0.99, false);
    Ok(GrayImage {
        width,
        height,
        pixels,
        bit_depth,
        pixel_spacing,
        format: Format::Dicom,
    })
}

fn open_dicom(bytes: &[u8]) -> Result<dicom_object::DefaultDicomObject, Error> {
    // The 128-byte preamble precedes the "DICM" magic that `from_reader` expects.
    dicom_object::OpenFileOptions::new()
        .from_reader(Cursor::new(&bytes[128..]))
        .map_err(|e| Error::Decode {
            format: Format::Dicom,
            message: e.to_string(),
        })
}

/// Maps values to [0, 1] between two percentiles (clamping outside), inverting if asked.
pub fn window_percentiles(values: &[f32], lo: f64, hi: f64, invert: bool) -> Vec<f32> {
    if values.is_empty() {
        return Vec::new();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos - pos.floor());
        let j = (i + 1).min(sorted.len() - 1);
        f64::from(sorted[i]) + frac * (f64::from(sorted[j]) - f64::from(sorted[i]))
    };
    let (a, b) = (at(lo), at(hi));
    let span = if b > a { b - a } else { 1.0 };
    values
        .iter()
        .map(|&v| {
            let t = ((f64::from(v) - a) / span).clamp(0.0, 1.0) as f32;
            if invert { 1.0 - t } else { t }
        })
        .collect()
}

/// Encodes a 16-bit grayscale PNG (used by the synthetic generator and tests).
pub fn encode_png16(width: u32, height: u32, pixels: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().expect("writing to a Vec cannot fail");
        let bytes: Vec<u8> = pixels.iter().flat_map(|v| v.to_be_bytes()).collect();
        writer
            .write_image_data(&bytes)
            .expect("pixel count matches width x height");
    }
    out
}

/// Encodes a 16-bit grayscale DICOM file (Digital X-Ray, explicit VR little endian, with
/// preamble and file meta group), as a scanner or PACS export writes one. Tests use it to write
/// real-format radiographs; `monochrome1` stores inverted values as MONOCHROME1 files do.
pub fn encode_dicom16(
    width: u32,
    height: u32,
    pixels: &[u16],
    monochrome1: bool,
    pixel_spacing: Option<(f64, f64)>,
    patient_id: &str,
) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::uids;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    const SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.1.1"; // Digital X-Ray Image, for presentation
    let instance = format!(
        "2.25.{}",
        u128::from_le_bytes(
            blake3::hash(format!("{patient_id}/{width}x{height}").as_bytes()).as_bytes()[..16]
                .try_into()
                .expect("16 bytes"),
        )
    );
    let stored: Vec<u16> = if monochrome1 {
        pixels.iter().map(|v| u16::MAX - v).collect()
    } else {
        pixels.to_vec()
    };
    let photometric = if monochrome1 {
        "MONOCHROME1"
    } else {
        "MONOCHROME2"
    };
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(SOP_CLASS)),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(instance.as_str()),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(patient_id)),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(width as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(stored.into_iter().collect()),
        ),
    ]);
    if let Some((row, col)) = pixel_spacing {
        obj.put(DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            PrimitiveValue::from(format!("{row}\\{col}")),
        ));
    }
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(SOP_CLASS)
                .media_storage_sop_instance_uid(instance.as_str())
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .expect("the file meta table is complete");
    let mut out = Vec::new();
    file.write_all(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_monochrome_pixel_spacing_and_windowing() {
        // A ramp 0..=1000 (one row per 100 values); MONOCHROME1 stores it inverted.
        let px: Vec<u16> = (0..=1000).map(|v| v as u16 * 60).chain([0; 9]).collect();
        for mono1 in [false, true] {
            let bytes = encode_dicom16(10, 101, &px, mono1, Some((0.143, 0.15)), "9000099");
            assert_eq!(sniff(&bytes), Some(Format::Dicom));
            let img = decode(&bytes).unwrap();
            assert_eq!((img.width, img.height, img.bit_depth), (10, 101, 16));
            assert_eq!(img.pixel_spacing, Some((0.143, 0.15)));
            // Windowed at the 5th/99th percentiles; both files show bright = high.
            let expect = window_percentiles(
                &px.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(),
                0.05,
                0.99,
                false,
            );
            for (a, b) in img.pixels.iter().zip(&expect) {
                assert!((a - b).abs() < 1e-5, "monochrome1={mono1}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn png16_round_trip() {
        let px: Vec<u16> = (0..12).map(|i| i * 5000).collect();
        let img = decode(&encode_png16(4, 3, &px)).unwrap();
        assert_eq!((img.width, img.height, img.bit_depth), (4, 3, 16));
        assert!((img.pixels[1] - 5000.0 / 65535.0).abs() < 1e-6);
    }

    #[test]
    fn truncated_jpegs_and_oversized_headers_are_refused_before_decoding() {
        let img =
            image::GrayImage::from_fn(48, 40, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert_eq!(validate(&jpeg).unwrap(), (48, 40));
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert!(validate(&padded).is_ok(), "zero padding after EOI is fine");
        let cut = &jpeg[..jpeg.len() - 30];
        assert!(matches!(validate(cut), Err(Error::Truncated { .. })));
        assert!(matches!(decode(cut), Err(Error::Truncated { .. })));
        // A PNG whose header claims 33000² pixels: refused from the header alone.
        let mut png = encode_png16(2, 2, &[1, 2, 3, 4]);
        png[16..20].copy_from_slice(&33_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&33_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(dimensions(&png).unwrap(), (Format::Png, 33_000, 33_000));
        assert!(matches!(validate(&png), Err(Error::TooLarge { .. })));
        assert!(matches!(decode(&png), Err(Error::TooLarge { .. })));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(decode(b"hello"), Err(Error::Unknown)));
        let mut png = encode_png16(4, 4, &[7; 16]);
        png.truncate(40);
        assert!(matches!(decode(&png), Err(Error::Decode { .. })));
    }

    #[test]
    fn windowing_clamps_and_inverts() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        let w = window_percentiles(&v, 0.05, 0.99, false);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[100], 1.0);
        assert!((w[50] - 45.0 / 94.0).abs() < 1e-6);
        let inv = window_percentiles(&v, 0.05, 0.99, true);
        assert_eq!(inv[0], 1.0);
    }
}

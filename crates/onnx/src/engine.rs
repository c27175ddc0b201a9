//! Which runtime executes the graph: tract (pure Rust, always there) or onnxruntime (the native library,
//! found at run time, never linked or downloaded at build time), and the onnxruntime side of a scorer.
//!
//! The library is looked for in order: `ORT_DYLIB_PATH`; the `onnxruntime` Python package of `$CXR_PYTHON`
//! or of the `python3` on the PATH (`capi/libonnxruntime.so.*` beside its `__init__.py`). It is loaded once
//! per process; one that is older than the API `ort` needs is refused with one line naming it and its
//! version, and [`Engine::Auto`] then runs tract.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::TensorRef;

/// The engine a scorer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// onnxruntime where it is found and usable, else tract (one log line says which ran).
    #[default]
    Auto,
    /// onnxruntime, or an error saying why it cannot be used.
    Onnxruntime,
    /// tract, the pure-Rust engine.
    Tract,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Engine::Auto),
            "onnxruntime" | "ort" => Ok(Engine::Onnxruntime),
            "tract" => Ok(Engine::Tract),
            other => Err(format!(
                "unknown engine `{other}`: auto, onnxruntime or tract"
            )),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Auto => "auto",
            Engine::Onnxruntime => "onnxruntime",
            Engine::Tract => "tract",
        })
    }
}

/// tract's version, as recorded beside results (`tract 0.23.9`).
pub const TRACT: &str = "tract 0.23.9";

/// The onnxruntime library this process loaded.
#[derive(Debug, Clone)]
pub struct Onnxruntime {
    /// The shared library's path.
    pub library: PathBuf,
    /// Its version string (`1.32.0`).
    pub version: String,
}

/// The library and the `ort` environment every session is made in.
struct Loaded {
    info: Onnxruntime,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Loaded, String>> = OnceLock::new();

fn loaded() -> Result<&'static Loaded, String> {
    RUNTIME
        .get_or_init(|| cxr_core::fsutil::catch_panic(load).unwrap_or_else(Err))
        .as_ref()
        .map_err(Clone::clone)
}

/// The onnxruntime library, found and loaded on first use (then the same answer for the whole process), or
/// one line saying why there is none.
pub fn onnxruntime() -> Result<&'static Onnxruntime, String> {
    loaded().map(|l| &l.info)
}

fn load() -> Result<Loaded, String> {
    let library = locate()?;
    let version = version_of(&library)?;
    new_enough(&version, &library)?;
    let env = ort::init_from(&library)
        .map_err(|e| e.to_string())?
        .with_name("cxr-onnx")
        .build()
        .map_err(|e| format!("onnxruntime {version} at {}: {e}", library.display()))?;
    Ok(Loaded {
        info: Onnxruntime { library, version },
        env,
    })
}

/// A library older than the C API `ort` binds (1.[`ort::MINOR_VERSION`]) is refused in one line.
fn new_enough(version: &str, library: &Path) -> Result<(), String> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(1), Some(minor)) if minor >= ort::MINOR_VERSION => Ok(()),
        (Some(major), Some(_)) if major > 1 => Ok(()),
        _ => Err(format!(
            "onnxruntime {version} at {} is too old or unknown: this build needs 1.{}.0 or newer",
            library.display(),
            ort::MINOR_VERSION
        )),
    }
}

/// `ORT_DYLIB_PATH`, else the library inside the Python package.
fn locate() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} is not a file", p.display()))
        };
    }
    let python = std::env::var_os("CXR_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("no onnxruntime: cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "no onnxruntime: set ORT_DYLIB_PATH, or install the onnxruntime package for {} (CXR_PYTHON)",
            python.display()
        ));
    }
    let dir = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("no onnxruntime library: {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| format!("no libonnxruntime.so.* in {}", dir.display()))
}

/// The library's own version string (`OrtGetApiBase()->GetVersionString()`), read before `ort` binds to
/// it so that a too-old library is refused by us, in one line, rather than by a panic.
fn version_of(library: &Path) -> Result<String, String> {
    let fail = |m: String| format!("{}: {m}", library.display());
    // SAFETY: loading onnxruntime runs its initialisers, as `ort` does itself; the symbol has the signature
    // of onnxruntime's C API (`const OrtApiBase* OrtGetApiBase(void)`), and the string it returns is static.
    unsafe {
        let lib = libloading::Library::new(library).map_err(|e| fail(e.to_string()))?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|_| fail("not an onnxruntime library (no OrtGetApiBase)".into()))?;
        let base = get();
        if base.is_null() {
            return Err(fail("OrtGetApiBase returned null".into()));
        }
        let s = ((*base).GetVersionString)();
        if s.is_null() {
            return Err(fail("no version string".into()));
        }
        Ok(std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

/// One onnxruntime session over a checked model, run by one batch at a time with `threads` intra-op threads
/// (inter-op 1): the caller never runs it inside a rayon loop, so the threads are never oversubscribed.
pub(crate) struct OrtSession {
    session: Mutex<Session>,
    /// Output names in the order [score, features?].
    outputs: Vec<String>,
}

/// An output as it came back: shape and values as f32.
pub(crate) struct Output {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl OrtSession {
    /// A session over `proto` (the checked model) reading `outputs` (graph outputs or any tensor names:
    /// those that are not graph outputs are added as such, in memory), external data from `dir`; with the
    /// library it runs on.
    pub(crate) fn new(
        mut proto: tract_onnx::pb::ModelProto,
        outputs: Vec<String>,
        dir: &Path,
        threads: usize,
    ) -> Result<(Self, &'static Onnxruntime), String> {
        use prost::Message;
        let rt = loaded()?;
        if let Some(g) = proto.graph.as_mut() {
            for name in &outputs {
                if !g.output.iter().any(|o| &o.name == name) {
                    // onnxruntime returns graph outputs only; a name with no type is typed by its inference.
                    g.output.push(tract_onnx::pb::ValueInfoProto {
                        name: name.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        let bytes = proto.encode_to_vec();
        drop(proto);
        let ort_err = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
        let session = Session::builder(&rt.env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort_err)?
            .with_intra_threads(threads.max(1))
            .map_err(ort_err)?
            .with_inter_threads(1)
            .map_err(ort_err)?
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                dir.to_string_lossy(),
            )
            .map_err(ort_err)?
            .commit_from_memory(&bytes)
            .map_err(|e| e.to_string())?;
        Ok((
            Self {
                session: Mutex::new(session),
                outputs,
            },
            &rt.info,
        ))
    }

    /// Runs one batch `[shape]` of `input`; the outputs in the order given at creation.
    pub(crate) fn run(&self, input: &[f32], shape: [usize; 4]) -> Result<Vec<Output>, String> {
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| "the onnxruntime session was poisoned by an earlier panic".to_string())?;
        let out = session
            .run(ort::inputs![tensor])
            .map_err(|e| e.to_string().replace('\n', " "))?;
        self.outputs
            .iter()
            .map(|name| {
                let v = out
                    .get(name)
                    .ok_or_else(|| format!("onnxruntime returned no output `{name}`"))?;
                let (shape, values) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| format!("output `{name}`: {e}"))?;
                Ok(Output {
                    shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                    values: values.to_vec(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_the_api_are_refused_in_one_line() {
        let lib = Path::new("/x/libonnxruntime.so.1.9.0");
        for old in ["1.9.0", "1.16.3", "0.5.0", "garbage"] {
            let e = new_enough(old, lib).unwrap_err();
            assert!(
                e.contains(old) && e.contains("/x/libonnxruntime") && e.contains("1.17.0"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
        for ok in ["1.17.0", "1.32.0", "2.0.1"] {
            assert!(new_enough(ok, lib).is_ok(), "{ok}");
        }
    }

    #[test]
    fn engines_parse_and_print_as_the_cli_takes_them() {
        for e in [Engine::Auto, Engine::Onnxruntime, Engine::Tract] {
            assert_eq!(e.to_string().parse::<Engine>(), Ok(e));
        }
        assert!(
            "cuda"
                .parse::<Engine>()
                .unwrap_err()
                .contains("auto, onnxruntime or tract")
        );
    }

    /// [`TRACT`] names the tract the workspace pins.
    #[test]
    fn the_recorded_tract_version_is_the_pinned_one() {
        let cargo =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
                .unwrap();
        let line = cargo.lines().find(|l| l.starts_with("tract-onnx")).unwrap();
        let version = TRACT.strip_prefix("tract ").unwrap();
        assert!(
            line.contains(&format!("\"{version}\"")),
            "{line} vs {TRACT}"
        );
    }
}

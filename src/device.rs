//! Device selection, done once: CUDA when the crate is built with `--features cuda` and a GPU is
//! present, the CPU otherwise. Every other module takes the `Device` it is given.
use candle_core::Device;

/// The best available device: CUDA device 0 if compiled with the `cuda` feature and available,
/// else the CPU.
pub fn best() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A short human-readable name of a device, for reports.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("CPU ({} threads)", candle_core::utils::get_num_threads()),
        Device::Cuda(_) => "CUDA GPU 0".to_string(),
        Device::Metal(_) => "Metal GPU".to_string(),
    }
}

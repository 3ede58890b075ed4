//! AdamW, with one semantics on every backend: burn's (β₁ 0.9, β₂ 0.999, ε 1e-5 added to the
//! square root of the bias-corrected second moment, decoupled weight decay `p ← p·(1 − lr·wd)`,
//! no AMSGrad). These are also PyTorch's `torch.optim.AdamW` formulas; only the defaults differ
//! (PyTorch's ε is 1e-8 and its weight decay 1e-2), and ktrack always passes its own.
//!
//! On the pure-Rust backend the step is burn's own, so runs there stay bit-identical to what
//! they were. On LibTorch (built with its headers, see `vendor/README.md`) each parameter's
//! step is LibTorch's fused kernel (`_fused_adamw_`): one pass over parameter, gradient and
//! both moments instead of burn's ~15 element-wise kernels. The state (step count, moments) is
//! burn's `AdamWState`, so the optimizer checkpoints of a run are the same files either way.

use burn::optim::{AdamWConfig, AdamWState, ModuleOptimizer};
use burn::tensor::Tensor;

/// β₁, β₂ and ε of every AdamW in ktrack (burn's defaults).
pub const BETA_1: f32 = 0.9;
pub const BETA_2: f32 = 0.999;
pub const EPSILON: f32 = 1e-5;

/// AdamW with decoupled weight decay `weight_decay`.
#[derive(Clone)]
pub struct AdamW {
    burn: burn::optim::AdamW,
    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    weight_decay: f32,
}

/// The optimizer of a module: AdamW over all its parameters.
pub fn adamw(weight_decay: f32) -> ModuleOptimizer {
    ModuleOptimizer::from(AdamW {
        burn: config(weight_decay).build(),
        weight_decay,
    })
}

fn config(weight_decay: f32) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(BETA_1)
        .with_beta_2(BETA_2)
        .with_epsilon(EPSILON)
        .with_weight_decay(weight_decay)
}

impl burn::optim::Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: burn::optim::LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, Option<AdamWState<D>>) {
        #[cfg(feature = "tch")]
        if fused::applies(&tensor) {
            return fused::step(self, lr, tensor, grad, state);
        }
        self.burn.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(
        state: AdamWState<D>,
        device: &burn::tensor::Device,
    ) -> AdamWState<D> {
        burn::optim::AdamW::to_device(state, device)
    }
}

/// Whether AdamW steps on LibTorch go through the fused kernel in this build.
pub fn fused_on_libtorch() -> bool {
    crate::train::backend::native_libtorch_backward()
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn 0.22 marks burn-tch deprecated; it is its LibTorch backend
mod fused {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::{TchTensor, native_ops};
    use burn::optim::{AdamWState, AdaptiveMomentumState};
    use burn::tensor::Tensor;

    type Done<const D: usize> = (Tensor<D>, Option<AdamWState<D>>);

    /// Whether the fused step applies: the shim is compiled in and the parameter lives on
    /// LibTorch (a clone is a new handle on the same storage, so trying it costs nothing).
    pub fn applies<const D: usize>(tensor: &Tensor<D>) -> bool {
        native_ops::native_backward() && tensor.clone().try_into_primitive::<LibTorch>().is_ok()
    }

    /// The fused step (see [`applies`]).
    pub fn step<const D: usize>(
        o: &super::AdamW,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> Done<D> {
        let param = primitive(tensor);
        let grad = primitive(grad);
        let (time, m, v) = match state {
            Some(s) => (
                s.momentum.time,
                primitive(s.momentum.moment_1),
                primitive(s.momentum.moment_2),
            ),
            None => {
                // Contiguous moments, whatever the parameter's strides (the kernel walks all four
                // tensors in one order).
                let zeros = || {
                    TchTensor::new(tch::Tensor::zeros(
                        param.tensor.size(),
                        (param.tensor.kind(), param.tensor.device()),
                    ))
                };
                (0, zeros(), zeros())
            }
        };
        let h = native_ops::AdamW {
            lr,
            beta1: f64::from(super::BETA_1),
            beta2: f64::from(super::BETA_2),
            weight_decay: f64::from(o.weight_decay),
            eps: f64::from(super::EPSILON),
        };
        let time = time + 1;
        let new = native_ops::fused_adamw(
            &param.tensor,
            &grad.tensor,
            &m.tensor,
            &v.tensor,
            time as i64,
            h,
        )
        .expect("the shim is compiled in (checked above)");
        let state = AdamWState {
            momentum: AdaptiveMomentumState {
                time,
                moment_1: Tensor::from_primitive::<LibTorch>(m),
                moment_2: Tensor::from_primitive::<LibTorch>(v),
                max_moment_2: None,
            },
        };
        (
            Tensor::from_primitive::<LibTorch>(TchTensor::new(new)),
            Some(state),
        )
    }

    fn primitive<const D: usize>(t: Tensor<D>) -> TchTensor {
        t.try_into_primitive::<LibTorch>()
            .unwrap_or_else(|_| unreachable_backend())
    }

    // A parameter on another backend than its gradient or state cannot happen: burn moves
    // them to the parameter's device first.
    fn unreachable_backend() -> ! {
        panic!("an AdamW step mixed backends")
    }
}

//! Adam (PyTorch's update rule, no weight decay: the paper's optimiser), with moments that can be saved and
//! restored so that a resumed run continues exactly.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{CandleContext, Result};

#[derive(Debug)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        let zeros = |vars: &[(String, Var)]| -> Result<Vec<Tensor>> {
            vars.iter()
                .map(|(n, v)| {
                    v.as_tensor()
                        .zeros_like()
                        .ctx(|| format!("Adam moment of `{n}`"))
                })
                .collect()
        };
        Ok(Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: zeros(&vars)?,
            v: zeros(&vars)?,
            vars,
        })
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let upd = (|| -> candle_core::Result<()> {
                let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
                let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                let denom = ((&v / bc2)?.sqrt()? + self.eps)?;
                let step = ((&m / bc1)? / denom)? * self.lr;
                let new = (var.as_tensor().detach() - step?)?;
                var.set(&new)?;
                self.m[i] = m;
                self.v[i] = v;
                Ok(())
            })();
            upd.ctx(|| format!("Adam step on `{name}`"))?;
        }
        crate::params::bump_generation();
        Ok(())
    }

    /// Moments as `adam.m.<name>` / `adam.v.<name>` tensors.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.m[i].clone());
            out.insert(format!("adam.v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by [`Adam::state`]; returns the name of the first one missing, if any.
    pub fn restore(&mut self, tensors: &BTreeMap<String, Tensor>, t: u64) -> Option<String> {
        for (i, (name, _)) in self.vars.iter().enumerate() {
            let (km, kv) = (format!("adam.m.{name}"), format!("adam.v.{name}"));
            match (tensors.get(&km), tensors.get(&kv)) {
                (Some(m), Some(v))
                    if m.dims() == self.m[i].dims() && v.dims() == self.v[i].dims() =>
                {
                    self.m[i] = m.clone();
                    self.v[i] = v.clone();
                }
                _ => return Some(km),
            }
        }
        self.t = t;
        None
    }
}

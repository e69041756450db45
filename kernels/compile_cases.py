"""The cases :mod:`.compile_check` compiles: every fastgan Triton kernel in the forms its launchers
specialise (constexprs, unit strides, pointer types), every autotune config of the matmuls."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Case:
    name: str
    fn: object                   # a triton JITFunction (not an Autotuner)
    dtype: str                   # "fp32" or "bf16": the tensor dtype of the data pointers
    constexprs: Dict[str, object]
    num_warps: int = 4
    num_stages: int = 3
    ptr_types: Dict[str, str] = field(default_factory=dict)  # overrides, e.g. partial buffers
    expect_wgmma: bool = False


def _jit(obj):
    """The JITFunction under an Autotuner or a launch.CachedKernel (or the function itself)."""
    from triton.runtime.jit import JITFunction
    while not isinstance(obj, JITFunction):
        obj = obj.fn
    return obj


def cases() -> List[Case]:
    import triton.language as tl

    from . import bias_act as BA
    from . import bn_act as BN
    from . import gan_loss as GL
    from . import gemv as GV
    from . import matmul as MM
    from ._common import _sum_dim0_kernel

    out: List[Case] = []
    mm = _jit(MM.mm_kernel)
    pair_fn = _jit(MM.mm_pair_kernel)
    # (label, constexprs describing the launch, as the launcher specialises it: strides equal to
    # 1 become constexpr 1; contiguous x [N, K], W [M, K], y [N, M])
    modes = [
        ("fwd", dict(ACT=2, HEAD=0, BIAS_MODE=1, GRAD=0, DB=False, BN=0, s_ak=1, s_bk=1, s_cq=1)),
        ("fwd_swapped", dict(ACT=2, HEAD=0, BIAS_MODE=2, GRAD=0, DB=False, BN=0, s_ak=1, s_bk=1, s_cp=1)),
        ("dx", dict(ACT=2, HEAD=0, BIAS_MODE=0, BN=0, GRAD=1, DB=False, s_ak=1, s_bq=1, s_cq=1, s_y1=1)),
        ("dx_swapped", dict(ACT=2, HEAD=0, BIAS_MODE=0, BN=0, GRAD=2, DB=False, s_ap=1, s_bk=1, s_cp=1,
                            s_y0=1)),
        ("dw_db", dict(ACT=2, HEAD=0, BIAS_MODE=0, BN=0, GRAD=1, DB=True, s_ap=1, s_bq=1, s_cq=1, s_y0=1)),
        ("dw_db_swapped", dict(ACT=2, HEAD=0, BIAS_MODE=0, BN=0, GRAD=2, DB=True, s_ap=1, s_bq=1, s_cp=1,
                               s_y1=1)),
    ]
    for cfg in MM.MM_CONFIGS:
        kw = cfg.kwargs
        tag = (f"P{kw['BLOCK_P']}_Q{kw['BLOCK_Q']}_K{kw['BLOCK_K']}"
               f"_w{cfg.num_warps}_s{cfg.num_stages}")
        for dt, prec in (("fp32", "tf32"), ("bf16", "ieee")):
            for label, flags in modes:
                ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8, **flags)
                out.append(Case(f"linear_act.mm[{label},{dt},{tag}]", mm, dt, ce,
                                cfg.num_warps, cfg.num_stages, expect_wgmma=True))
            # the output activations (tanh 3, sigmoid 4: exp/log in the epilogue or on the dY
            # tiles) on the smallest and the largest tile
            if cfg in (MM.MM_CONFIGS[0], MM.MM_CONFIGS[-1]):
                for act in (3, 4):
                    for label, flags in modes[::2]:  # fwd, dx, dw_db (the swaps: strides)
                        ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8,
                                  **dict(flags, ACT=act))
                        out.append(Case(f"linear_act.mm[{label},act{act},{dt},{tag}]", mm, dt, ce,
                                        cfg.num_warps, cfg.num_stages, expect_wgmma=True))
                # inference-mode batch norm in the forward epilogue (mlp's eval G), both axes
                for label, flags in modes[:2]:
                    ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8,
                              **dict(flags, BN=int(flags["BIAS_MODE"])))
                    out.append(Case(f"linear_act.mm[{label},bn_eval,{dt},{tag}]", mm, dt, ce,
                                    cfg.num_warps, cfg.num_stages, expect_wgmma=True))
            # linear_act_head's dX alone (the G step: D frozen), g read through a zero stride
            for label, flags in (("dx", dict(ACT=2, BIAS_MODE=0, BN=0, GRAD=1, DB=False,
                                             s_ap=1, s_bq=1, s_cq=1, s_y1=1, s_f1=1)),
                                 ("dx_swapped", dict(ACT=2, BIAS_MODE=0, BN=0, GRAD=2, DB=False,
                                                     s_ap=1, s_bq=1, s_cp=1, s_y0=1, s_f0=1))):
                ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8, HEAD=1,
                          **flags)
                out.append(Case(f"linear_act_head.mm[{label},{dt},{tag}]", mm, dt, ce,
                                cfg.num_warps, cfg.num_stages, expect_wgmma=True))
        # the backward's dX and dW (+ db) in one launch, every pairing of their orientations
        for (xl, xf), (wl, wf) in ((x, w) for x in modes[2:4] for w in modes[4:6]):
            pair = {"sx_" + k[2:]: v for k, v in xf.items() if k.startswith("s_")}
            pair.update({"sw_" + k[2:]: v for k, v in wf.items() if k.startswith("s_")})
            tag2 = f"{xl.replace('dx', 'x')},{wl.replace('dw_db', 'w')}"
            for dt, prec in (("fp32", "tf32"), ("bf16", "ieee")):
                acts = (2, 3, 4) if (cfg in (MM.MM_CONFIGS[0], MM.MM_CONFIGS[-1])
                                     and xl == "dx" and wl == "dw_db") else (2,)
                for act in acts:
                    ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8, ACT=act,
                              GRAD_X=xf["GRAD"], GRAD_W=wf["GRAD"], DB=True, HEAD=0, **pair)
                    sfx = "" if act == 2 else f",act{act}"
                    out.append(Case(f"linear_act.mm_pair[{tag2}{sfx},{dt},{tag}]", pair_fn, dt,
                                    ce, cfg.num_warps, cfg.num_stages, expect_wgmma=True))
                # linear_act_head's backward: dY = g w read through zero strides (the head's
                # gradients from the dW programs); the natural pairing, every config
                if xl == "dx" and wl == "dw_db":
                    # g [N, 1] read as dY [N, M]: unit stride along the rows, zero along the
                    # features (an i32 argument, not a constexpr), the head's weight the other
                    # way round (sx_f1, sw_f0 = 1)
                    hp = {k: v for k, v in pair.items() if k not in ("sx_ak", "sw_ap")}
                    hp.update(sx_ap=1, sw_ak=1, sx_f1=1, sw_f0=1)
                    ce = dict(kw, PREC=prec, UPCAST=False, ACC=tl.float32, GROUP_P=8, ACT=2,
                              GRAD_X=1, GRAD_W=1, DB=True, HEAD=2, **hp)
                    out.append(Case(f"linear_act_head.mm_pair[{tag2},{dt},{tag}]", pair_fn, dt,
                                    ce, cfg.num_warps, cfg.num_stages, expect_wgmma=True))
    for dt in ("fp32", "bf16"):
        # tiny-M (1-logit layer) kernels: reductions, no tensor cores
        for act in (2, 3, 4):
            sfx = "" if act == 2 else f",act{act}"
            for bn, bk in ((1, 1024), (16, 256)):
                out.append(Case(f"linear_act.gemv_fwd[{dt},N{bn},K{bk}{sfx}]", GV._gemv_fwd_kernel,
                                dt, dict(ACT=act, HAS_BIAS=True, ACC=tl.float32, BLOCK_N=bn,
                                         BLOCK_M=1, BLOCK_K=bk, s_xk=1, s_wk=1, s_ym=1)))
            for direct in (False, True):   # partials (fp32) or dW/db themselves (one row block)
                pt = {} if direct else {"pdw_ptr": "*fp32", "pdb_ptr": "*fp32"}
                out.append(Case(f"linear_act.gemv_bwd[{dt},{'direct' if direct else 'partials'}{sfx}]",
                                GV._gemv_bwd_kernel, dt,
                                dict(ACT=act, NEED_DX=True, NEED_DW=True, NEED_DB=True,
                                     ACC=tl.float32, BLOCK_N=32 if direct else 64, BLOCK_M=1,
                                     BLOCK_K=128 if direct else 64, s_gm=1, s_ym=1, s_xk=1,
                                     s_wk=1, s_dxk=1), ptr_types=pt))
        out.append(Case(f"common.sum_dim0[{dt}]", _sum_dim0_kernel, "fp32",
                        dict(BLOCK_S=16, BLOCK_L=256, ACC=tl.float32),
                        ptr_types={"out_ptr": "*" + dt}))
        # [A, C, B] sweeps: NCHW (dcgan 128x64x32x32) and rows/channels_last ([N*H*W, C])
        layouts = {"nchw": dict(BLOCK_A=2, BLOCK_C=1, BLOCK_B=1024, sB=1),
                   "rows": dict(BLOCK_A=32, BLOCK_C=64, BLOCK_B=1, sC=1)}
        for lay, blk in layouts.items():
            for act in (2, 3, 4):  # LeakyReLU, tanh, sigmoid
                sfx = "" if act == 2 else f",act{act}"
                out.append(Case(f"bias_act.fwd[{dt},{lay}{sfx}]", BA._bias_act_fwd_kernel, dt,
                                dict(HAS_BIAS=True, ACT=act, ACC=tl.float32, **blk)))
                out.append(Case(f"bias_act.bwd[{dt},{lay}{sfx}]", BA._bias_act_bwd_kernel, dt,
                                dict(ACT=act, WRITE_DX=True, NEED_DB=True, ACC=tl.float32, **blk),
                                ptr_types={"pdb_ptr": "*fp32"}))
            f32 = {n: "*fp32" for n in ("rm_ptr", "rv_ptr", "mean_ptr", "rstd_ptr", "ps1_ptr",
                                        "ps2_ptr", "w_ptr", "b_ptr")}
            for split, unbiased, grouped in ((1, True, False), (8, True, False),
                                             (1, False, False), (1, True, True)):
                out.append(Case(f"bn_act.fwd[{dt},{lay},split{split}"
                                f"{'' if unbiased else ',biased'}{',grouped' if grouped else ''}]",
                                BN._bn_fwd_kernel, dt,
                                dict(SPLIT=split, HAS_W=True, HAS_B=True, HAS_RUNNING=True,
                                     UNBIASED=unbiased, ACT=True, ACC=tl.float32,
                                     GROUPED=grouped, **blk), ptr_types=f32))
                if not unbiased or grouped:
                    continue
                f32b = dict(f32, dw_ptr="*fp32", db_ptr="*fp32")
                out.append(Case(f"bn_act.bwd[{dt},{lay},split{split}]", BN._bn_bwd_kernel, dt,
                                dict(SPLIT=split, TRAINING=True, HAS_W=True, HAS_B=True, ACT=True,
                                     NEED_DX=True, NEED_DW=True, NEED_DB=True, ACC=tl.float32,
                                     **blk), ptr_types=f32b))
            for training in (True, False):
                out.append(Case(f"bn_act.apply[{dt},{lay},{'train' if training else 'eval'}]",
                                BN._bn_apply_kernel, dt,
                                dict(SPLIT=8, TRAINING=training, HAS_W=True, HAS_B=True,
                                     HAS_RUNNING=True, UNBIASED=True, ACT=True,
                                     ACC=tl.float32, BLOCK_S=8, **blk), ptr_types=f32))
            out.append(Case(f"bn_act.bwd_dx[{dt},{lay}]", BN._bn_bwd_dx_kernel, dt,
                            dict(SPLIT=8, TRAINING=True, HAS_W=True, HAS_B=True, ACT=True,
                                 NEED_DX=True, NEED_DW=True, NEED_DB=True, ACC=tl.float32,
                                 BLOCK_S=8, **blk),
                            ptr_types=dict(f32, dw_ptr="*fp32", db_ptr="*fp32")))
        # STATS (gan_loss_stats): the metrics added by the program that writes the loss
        for kind, kname in enumerate(("bce", "lsgan", "hinge", "linear")):
            for one, stats in ((True, False), (False, False), (True, True)):
                out.append(Case(f"gan_loss.loss_grad[{dt},{kname},"
                                f"{'one' if one else 'multi'}{',stats' if stats else ''}]",
                                GL._gan_loss_kernel, dt,
                                dict(KIND=kind, T_MODE=1, NEED_GRAD=True, ONE_BLOCK=one,
                                     ACC=tl.float32, BLOCK=2048, STATS=stats,
                                     S_ACC=tl.float32, S_BLOCK=2048),
                                ptr_types={"part_ptr": "*fp32", "stats_ptr": "*fp32",
                                           "ld_ptr": "*fp32"}))
        for stats in (False, True):
            out.append(Case(f"gan_loss.finalize[{dt}{',stats' if stats else ''}]",
                            GL._gan_loss_finalize_kernel, "fp32",
                            dict(ACC=tl.float32, BLOCK=1024, STATS=stats, S_ACC=tl.float32,
                                 S_BLOCK=2048),
                            ptr_types={"loss_ptr": "*" + dt, "real_ptr": "*" + dt,
                                       "fake_ptr": "*" + dt}))
    # the batch gather + uint8 -> fp32 scaling (fp32 out only) and the iteration's metrics
    from . import gan_stats as GS
    from . import gather_scale as GA
    for shift in (False, True):
        out.append(Case(f"gather_scale[{'shift' if shift else 'noshift'}]",
                        GA._gather_scale_kernel, "fp32", dict(HAS_SHIFT=shift, BLOCK=1024),
                        ptr_types={"img_ptr": "*u8", "idx_ptr": "*i64", "s_row": "i64",
                                   "shift": "fp32"}))
    for dt in ("fp32", "bf16"):
        out.append(Case(f"gan_stats[{dt}]", GS._gan_stats_kernel, dt,
                        dict(ACC=tl.float32, BLOCK=2048), ptr_types={"stats_ptr": "*fp32"}))
    # Adam, both forms: fp32 parameters and state (parameters stay fp32 under bf16 autocast);
    # the eps-hat form's lr is fp64, torch's form's fp32 (torch's capturable lr tensor)
    from . import adam as AD
    for form, torch_form, lr in (("eps_hat", False, "*fp64"), ("torch", True, "*fp32")):
        pt = dict(tab_ptr="*i64", step_ptr="*fp32", cnt_ptr="*i32", lr_ptr=lr, hp_ptr="*fp64")
        for dt, tdt in (("fp32", tl.float32), ("bf16", tl.bfloat16)):
            out.append(Case(f"adam.{form}[{dt}]", AD._adam_kernel, dt,
                            dict(TORCH_FORM=torch_form, DT=tdt, ACC=tl.float32, BLOCK=AD.BLOCK,
                                 SB=AD.STEP_BLOCK), ptr_types=pt))
    # ---- linear_bn_act (issue 20): the matmul with training-mode BN in its epilogue (every
    # row in one tile: BLOCK_P >= N, so wgmma from 64 rows) and its one-launch backward ----
    from . import linear_bn_act as LBA
    sc = {n: "fp32" for n in ("slope_pre", "slope_post", "var_div")}
    acc_ptrs = {n: "*fp32" for n in ("g_ptr", "b_ptr", "mean_ptr", "invstd_ptr", "rm_ptr",
                                     "rv_ptr", "db_ptr", "dg_ptr", "dbeta_ptr")}
    for dt, prec in (("fp32", "tf32"), ("bf16", "ieee")):
        for rows in (16, 64, 128, 256):
            bp, bq, bk, warps = LBA._blocks(rows, 1024, 1024)
            for pre, post in ((2, 0), (1, 1)):
                out.append(Case(f"linear_bn_act.fwd[{dt},P{bp}_Q{bq}_K{bk}_w{warps},"
                                f"pre{pre},post{post}]", LBA._fwd_kernel, dt,
                                dict(PRE=pre, POST=post, HAS_BIAS=True, HAS_G=True, HAS_B=True,
                                     RUNNING=True, PREC=prec, UPCAST=False, ACC=tl.float32,
                                     BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk, s_xk=1, s_wk=1),
                                num_warps=warps, ptr_types=dict(sc, **acc_ptrs),
                                expect_wgmma=bp >= 64))
        for rows in (16, 64, 128, 256):
            # the one backward launch: dX and dW programs (both products on tensor cores)
            bp, bq, bk, bqx, bkx, warps = LBA._bwd_blocks(rows, 1024, 1024)
            for pre, post in ((2, 0), (1, 1)):
                for need_dw in (True, False):
                    out.append(Case(f"linear_bn_act.bwd[{dt},P{bp}_Q{bq}_K{bk}_QX{bqx}_KX{bkx}"
                                    f"_w{warps},pre{pre},post{post}{'' if need_dw else ',no_dw'}]",
                                    LBA._bwd_kernel, dt,
                                    dict(PRE=pre, POST=post, HAS_G=True, HAS_B=True,
                                         NEED_DW=need_dw, PREC=prec, UPCAST=False,
                                         ACC=tl.float32, BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk,
                                         BLOCK_QX=bqx, BLOCK_KX=bkx, s_gm=1, s_xk=1, s_wk=1),
                                    num_warps=warps, ptr_types=dict(sc, **acc_ptrs),
                                    expect_wgmma=True))
    # ---- end linear_bn_act ----
    return out

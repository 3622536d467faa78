/* train/state.h -- what tg_train_state_save/load (src/io/checkpoint.c) need from the optimizer
 * (src/train/optim.c), which keeps its struct private. Private (not installed). */
#ifndef TG_TRAIN_STATE_H
#define TG_TRAIN_STATE_H

#include "tapegrad.h"

/* The optimizer's parameters (its own list, in tg_optim_new's order) and kind. */
int tg__optim_n_params(const tg_optim *o);
tg_tensor *tg__optim_param(const tg_optim *o, int i);
tg_optim_kind tg__optim_kind(const tg_optim *o);
/* State buffers per parameter: 0 (SGD), 1 (momentum, Nesterov: the velocity), 2 (Adam: m, v). */
int tg__optim_n_buffers(const tg_optim *o);
/* Buffer k (0: m or the velocity, 1: Adam's v) of parameter i: the parameter's dtype and numel. */
void *tg__optim_buffer(const tg_optim *o, int i, int k);
/* Sets the step count (the learning-rate schedule's position and Adam's bias correction). */
void tg__optim_set_steps(tg_optim *o, int64_t steps);

#endif

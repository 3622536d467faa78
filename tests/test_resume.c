/* Exact resume after a crash: a small MLP trained N steps straight through must end bit-identical
 * (memcmp) to the same training run in a child that saves its state every K steps, is killed
 * with a real SIGKILL (between steps, or in the middle of writing a state file) and is resumed
 * from its last state file in a new child. The run uses everything a state file must restore:
 * Adam's moments and step count, a step-decay learning-rate schedule, a shuffled tg_dataset that
 * crosses epochs, and a generator of its own (noise added to each batch). */
#define _POSIX_C_SOURCE 200809L
#include "core/engine.h"
#include "io/checkpoint_io.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_STEPS 60 /* 7.5 epochs of 8 batches */
#define EVERY 5    /* a state file every EVERY steps */
#define N_PARAMS 4

typedef struct run {
    tg_tensor *x, *y; /* the data set */
    tg_linear *l1, *l2;
    tg_tensor *params[N_PARAMS];
    tg_optim *opt;
    tg_dataset *ds;
    tg_rng noise;
    tg_tape *tape;
} run;

static void run_init(run *r) {
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    cr_assert_eq(tg_circles_make(TG_F32, 64, &rng, &r->x, &r->y), TG_OK);
    r->l1 = tg_linear_new(TG_F32, 2, 8, "l1", &rng);
    r->l2 = tg_linear_new(TG_F32, 8, 2, "l2", &rng);
    cr_assert(r->l1 && r->l2);
    tg_tensor *p[N_PARAMS] = {r->l1->W, r->l1->b, r->l2->W, r->l2->b};
    memcpy(r->params, p, sizeof p);
    tg_optim_config c = tg_optim_defaults(TG_OPTIM_ADAM, 0.05);
    c.decay_every = 16;
    c.decay_factor = 0.5;
    r->opt = tg_optim_new(&c, r->params, N_PARAMS);
    r->ds = tg_dataset_new(r->x, r->y, 8, 1, 99);
    tg_rng_seed(&r->noise, 5);
    r->tape = tg_tape_new();
    cr_assert(r->opt && r->ds && r->tape);
}

static void run_free(run *r) {
    tg_tape_free(r->tape);
    tg_dataset_free(r->ds);
    tg_optim_free(r->opt);
    tg_linear_free(r->l1);
    tg_linear_free(r->l2);
    tg_tensor_free(r->x);
    tg_tensor_free(r->y);
}

static tg_status state_io(run *r, const char *path, int save) {
    tg_data_position pos;
    tg_dataset_get_position(r->ds, &pos);
    tg_rng *rngs[1] = {&r->noise};
    tg_train_state s = {.params = r->params,
                        .n_params = N_PARAMS,
                        .optim = r->opt,
                        .rngs = rngs,
                        .n_rngs = 1,
                        .data = &pos};
    if (save)
        return tg_train_state_save(path, &s);
    tg_status st = tg_train_state_load(path, &s);
    if (st == TG_OK)
        st = tg_dataset_set_position(r->ds, &pos);
    return st;
}

/* One step: the next batch (a new epoch when one ends), noise from the run's own generator,
 * forward, backward, Adam. */
static void step(run *r) {
    tg_tensor *bx, *by;
    int k = tg_dataset_next(r->ds, &bx, &by);
    if (k == 0)
        k = tg_dataset_next(r->ds, &bx, &by);
    cr_assert_eq(k, 1);
    float *d = tg_tensor_data(bx);
    for (int64_t i = 0; i < tg_tensor_numel(bx); i++)
        d[i] += (float)(0.01 * tg_rng_normal(&r->noise));
    tg_tape_reset(r->tape);
    tg_tensor *h = tg_tanh(r->tape, tg_linear_forward(r->tape, r->l1, bx));
    tg_tensor *loss = tg_softmax_cross_entropy(r->tape, tg_linear_forward(r->tape, r->l2, h), by);
    tg_optim_zero_grad(r->opt);
    cr_assert_eq(tg_backward(r->tape, loss), TG_OK, "%s", tg_tape_errmsg(r->tape));
    cr_assert_eq(tg_optim_step(r->opt), TG_OK);
}

/* Trains to N_STEPS, from `resume` if given and present; with `ckpt`, saves there every EVERY
 * steps; with kill_at > 0, SIGKILLs itself right after step kill_at. */
static void train(run *r, const char *resume, const char *ckpt, int kill_at) {
    struct stat sb;
    if (resume && stat(resume, &sb) == 0)
        cr_assert_eq(state_io(r, resume, 0), TG_OK, "%s", tg_last_errmsg());
    while (tg_optim_steps(r->opt) < N_STEPS) {
        step(r);
        const int64_t s = tg_optim_steps(r->opt);
        if (ckpt && s % EVERY == 0)
            cr_assert_eq(state_io(r, ckpt, 1), TG_OK, "%s", tg_last_errmsg());
        if (s == kill_at)
            kill(getpid(), SIGKILL);
    }
}

/* The parameters' bytes, back to back. */
static size_t param_bytes(const run *r, uint8_t *out) {
    size_t n = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        size_t b = (size_t)tg_tensor_numel(r->params[i]) * sizeof(float);
        memcpy(out + n, tg_tensor_cdata(r->params[i]), b);
        n += b;
    }
    return n;
}

#define MAX_BYTES 4096

static size_t straight_run(uint8_t *out) {
    run r = {0};
    run_init(&r);
    train(&r, NULL, NULL, 0);
    size_t n = param_bytes(&r, out);
    run_free(&r);
    return n;
}

/* In a child: the mid-save crash. The write hook SIGKILLs the process after half of the
 * save_no'th state file's data section went out. */
static int save_count, kill_in_save;
static size_t killing_write(const void *b, size_t s, size_t n, FILE *f) {
    if (n * s > 8 && ++save_count == kill_in_save) { /* a header or data write */
        fwrite(b, s, n / 2, f);
        fflush(f);
        kill(getpid(), SIGKILL);
    }
    return fwrite(b, s, n, f);
}

/* Forks a child that runs `train` and returns its wait status; with out, the child pipes back
 * the final parameters. */
static int child(const char *resume, const char *ckpt, int kill_at, int kill_write, uint8_t *out,
                 size_t *out_n) {
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (kill_write) {
            kill_in_save = kill_write;
            tg__checkpoint_io.write = killing_write;
        }
        run r = {0};
        run_init(&r);
        train(&r, resume, ckpt, kill_at);
        uint8_t buf[MAX_BYTES];
        size_t n = param_bytes(&r, buf);
        run_free(&r);
        _exit(write(fds[1], buf, n) == (ssize_t)n ? 0 : 3);
    }
    close(fds[1]);
    size_t got = 0;
    for (ssize_t k; out && (k = read(fds[0], out + got, MAX_BYTES - got)) > 0;)
        got += (size_t)k;
    close(fds[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    if (out_n)
        *out_n = got;
    return status;
}

static int count_temps(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c '\\.tmp-' > '%s/count'", dir, dir);
    if (system(cmd) == -1)
        return -1;
    snprintf(cmd, sizeof cmd, "%s/count", dir);
    FILE *f = fopen(cmd, "r");
    int n = -1;
    if (f && fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f)
        fclose(f);
    unlink(cmd);
    return n;
}

Test(resume, killed_and_resumed_runs_end_bit_identical_to_a_straight_run, .timeout = 300) {
    uint8_t want[MAX_BYTES], got[MAX_BYTES];
    const size_t n = straight_run(want);
    cr_assert(n > 0 && n <= MAX_BYTES);

    char dir[] = "/tmp/tg_resume_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char ckpt[64];
    snprintf(ckpt, sizeof ckpt, "%s/state.safetensors", dir);

    /* Kill points drawn from a seeded generator (reproducible "random" steps), plus the edges:
     * before the first state file, right after one, one step before the end. */
    tg_rng pick;
    tg_rng_seed(&pick, 2024);
    int points[8] = {3, EVERY, N_STEPS - 1};
    for (int i = 3; i < 8; i++)
        points[i] = 1 + (int)tg_rng_below(&pick, N_STEPS - 1);
    for (int i = 0; i < 8; i++) {
        unlink(ckpt);
        int st = child(NULL, ckpt, points[i], 0, NULL, NULL);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "kill point %d: status %d", points[i],
                  st);
        size_t m = 0;
        st = child(ckpt, NULL, 0, 0, got, &m);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "resume after step %d: status %d",
                  points[i], st);
        cr_assert_eq(m, n);
        cr_expect(memcmp(got, want, n) == 0,
                  "killed after step %d, resumed: parameters differ from the straight run",
                  points[i]);
    }

    /* Killed in the middle of writing a state file: the previous one survives, and the run
     * resumed from it still ends bit-identical. A state file makes one write per piece of more
     * than 8 bytes (the header and each tensor but l2.b: 10 per file here): kill in the 20th
     * (the 2nd file) and the 45th (the 5th). */
    const int in_save[2] = {20, 45};
    for (int i = 0; i < 2; i++) {
        unlink(ckpt);
        int st = child(NULL, ckpt, 0, in_save[i], NULL, NULL);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "status %d", st);
        cr_expect_gt(count_temps(dir), 0, "the killed save left no temporary file?");
        size_t m = 0;
        st = child(ckpt, ckpt, 0, 0, got, &m);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
        cr_assert_eq(m, n);
        cr_expect(memcmp(got, want, n) == 0, "killed in write %d: parameters differ", in_save[i]);
        cr_expect_eq(count_temps(dir), 0, "the resumed run's saves did not clean up");
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

Test(resume, a_state_file_restores_everything_or_nothing) {
    char dir[] = "/tmp/tg_resume_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/s.safetensors", dir);
    run a = {0}, b = {0};
    run_init(&a);
    run_init(&b);
    for (int i = 0; i < 13; i++)
        step(&a);
    cr_assert_eq(state_io(&a, path, 1), TG_OK, "%s", tg_last_errmsg());
    /* b, untouched, loads it: then both continue identically. */
    cr_assert_eq(state_io(&b, path, 0), TG_OK, "%s", tg_last_errmsg());
    cr_expect_eq(tg_optim_steps(b.opt), 13);
    cr_expect_eq(tg_optim_lr(b.opt), tg_optim_lr(a.opt));
    for (int i = 0; i < 7; i++) {
        step(&a);
        step(&b);
    }
    uint8_t pa[MAX_BYTES], pb[MAX_BYTES];
    size_t n = param_bytes(&a, pa);
    cr_assert_eq(param_bytes(&b, pb), n);
    cr_expect(memcmp(pa, pb, n) == 0);

    /* A state value changed in the header (same length, so the file stays well-formed) is
     * caught by the state checksum, and nothing of b changes. */
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    char buf[8192];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = '\0';
    char *at = strstr(buf + 8, "\"optim.steps\":\"13\""); /* after the 8-byte length */
    cr_assert_not_null(at);
    at[15] = '2'; /* 13 -> 23 */
    fseek(f, at - buf + 15, SEEK_SET);
    fputc('2', f);
    fclose(f);
    const uint64_t rng_before = b.noise.s[0];
    cr_expect_eq(state_io(&b, path, 0), TG_ERR_FORMAT);
    cr_expect(strstr(tg_last_errmsg(), "checksum mismatch in the state values") != NULL, "%s",
              tg_last_errmsg());
    cr_expect_eq(tg_optim_steps(b.opt), 20);
    cr_expect_eq(b.noise.s[0], rng_before);
    cr_assert_eq(param_bytes(&b, pb), n);
    cr_expect(memcmp(pa, pb, n) == 0, "a failed load changed the parameters");

    /* A run without the optimizer cannot take this file (its moments would be dropped). */
    tg_train_state s = {.params = b.params, .n_params = N_PARAMS};
    cr_expect_neq(tg_train_state_load(path, &s), TG_OK);
    run_free(&a);
    run_free(&b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

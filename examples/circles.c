/* circles.c -- the course report's exercise, end to end.
 *
 * Points x uniform in [-1,1]^2 are labelled 1 inside the circle of radius sqrt(2/pi) and 0
 * outside (half and half). A 2-4-2 network learns the labels:
 *     h~ = W_h x + b_h,   h = tanh(h~),   y~ = W_y h + b_y,   loss = cross-entropy(softmax(y~), y)
 * trained by mini-batch gradient descent. Then it draws four pictures with gnuplot:
 *   1. the decision boundary, with the train and test points;
 *   2. full-batch vs stochastic vs mini-batch gradient descent, against epochs and wall time;
 *   3. a learning-rate sweep: too small, good, too large;
 *   4. the same network without the tanh: a linear model cannot separate the circles.
 *
 * Run `circles --help` for the flags. The pictures need gnuplot (Debian: gnuplot-nox). */
#define _POSIX_C_SOURCE 200809L /* mkdir */

#include <tapegrad.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define N_TRAIN 1000
#define N_TEST 500
#define GRID 120 /* the decision-boundary pictures sample the plane on GRID x GRID points */
/* One --seed drives three independent random streams: the data, the initial weights and the
 * shuffling. Offsetting the seed keeps them from replaying the same numbers. */
#define WEIGHT_STREAM 0x9e3779b97f4a7c15ull
#define SHUFFLE_STREAM 0x3c6ef372fe94f82aull

typedef struct options {
    int hidden;
    double lr;
    int batch;
    int epochs;
    unsigned long long seed;
    const char *out;
} options;

static const options defaults = {
    .hidden = 4, .lr = 1.0, .batch = 20, .epochs = 200, .seed = 1, .out = "circles-out"};

static void usage(FILE *f, const char *prog) {
    fprintf(f,
            "usage: %s [options]\n"
            "Trains the 2-H-2 tanh network of the course report on the circles dataset\n"
            "(%d train and %d test points in [-1,1]^2, label = inside radius sqrt(2/pi)),\n"
            "prints loss and accuracy, then trains a few more networks for the pictures\n"
            "(full-batch vs stochastic vs mini-batch, a learning-rate sweep, no tanh) and\n"
            "draws them with gnuplot into DIR: 1_decision_boundary.png, 2_gd_variants.png,\n"
            "3_learning_rates.png, 4_without_tanh.png (plus plots.gp and its data files).\n\n"
            "  --hidden H   hidden units (default %d)\n"
            "  --lr LR      initial learning rate of gradient descent, halved after each\n"
            "               quarter of the epochs (default %g)\n"
            "  --batch B    mini-batch size, 1..%d (default %d)\n"
            "  --epochs E   passes over the training set (default %d)\n"
            "  --seed S     seed of the data, the weights and the shuffling (default %llu)\n"
            "  --out DIR    folder for the pictures and their data (default %s)\n"
            "  --help       this text\n",
            prog, N_TRAIN, N_TEST, defaults.hidden, defaults.lr, N_TRAIN, defaults.batch,
            defaults.epochs, defaults.seed, defaults.out);
}

/* Parses argv into o; returns 0, 1 after --help, or -1 on a bad flag (with a message). */
static int parse_args(int argc, char **argv, options *o) {
    *o = defaults;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout, argv[0]);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: unknown flag or missing value: %s (try --help)\n", argv[0], a);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        if (!strcmp(a, "--hidden"))
            o->hidden = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--lr"))
            o->lr = strtod(v, &end);
        else if (!strcmp(a, "--batch"))
            o->batch = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--epochs"))
            o->epochs = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed"))
            o->seed = strtoull(v, &end, 10);
        else if (!strcmp(a, "--out")) {
            o->out = v;
            continue;
        } else {
            fprintf(stderr, "%s: unknown flag %s (try --help)\n", argv[0], a);
            return -1;
        }
        if (errno || !end || *end || end == v) {
            fprintf(stderr, "%s: %s needs a number, got '%s'\n", argv[0], a, v);
            return -1;
        }
    }
    if (o->hidden < 1 || !(o->lr > 0) || o->batch < 1 || o->batch > N_TRAIN || o->epochs < 1) {
        fprintf(stderr, "%s: need --hidden >= 1, --lr > 0, --batch in 1..%d, --epochs >= 1\n",
                argv[0], N_TRAIN);
        return -1;
    }
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- The model: two linear layers, with or without the tanh between them ---- */

typedef struct model {
    tg_linear *hid, *out;
    int use_tanh;
} model;

static int model_init(model *m, int hidden, int use_tanh, unsigned long long seed) {
    tg_rng rng;
    tg_rng_seed(&rng, seed + WEIGHT_STREAM);
    m->hid = tg_linear_new(TG_F64, 2, hidden, "h", &rng);
    m->out = tg_linear_new(TG_F64, hidden, 2, "y", &rng);
    m->use_tanh = use_tanh;
    if (!m->hid || !m->out) {
        fprintf(stderr, "model: %s\n", tg_last_errmsg());
        return -1;
    }
    return 0;
}

static void model_free(model *m) {
    tg_linear_free(m->hid);
    tg_linear_free(m->out);
}

/* The report's forward pass, as builder calls: y~ = W_y tanh(W_h x + b_h) + b_y (row-wise). */
static tg_tensor *model_logits(tg_tape *t, const model *m, tg_tensor *x) {
    tg_tensor *h = tg_linear_forward(t, m->hid, x);
    if (m->use_tanh)
        h = tg_tanh(t, h);
    return tg_linear_forward(t, m->out, h);
}

/* Loss and accuracy of m on a whole set. */
static int evaluate(tg_tape *t, const model *m, tg_tensor *x, tg_tensor *y, double *loss,
                    double *acc) {
    tg_tape_reset(t);
    tg_tensor *logits = model_logits(t, m, x);
    tg_tensor *l = tg_softmax_cross_entropy(t, logits, y);
    if (!l) {
        fprintf(stderr, "evaluate: %s\n", tg_tape_errmsg(t));
        return -1;
    }
    *loss = tg_tensor_item(l);
    *acc = tg_accuracy(logits, y);
    return 0;
}

/* ---- Training ---- */

typedef struct history {
    int epochs;
    double *loss;    /* [epochs + 1]: training loss before training and after each epoch */
    double *seconds; /* [epochs + 1]: training time so far (evaluation excluded) */
    double *test_acc;
} history;

static void history_free(history *h) {
    free(h->loss);
    free(h->seconds);
    free(h->test_acc);
}

typedef struct data {
    tg_tensor *x_train, *y_train, *x_test, *y_test;
} data;

/* The learning rate is halved after every this many epochs. */
static int decay_epochs(int epochs) { return epochs >= 4 ? epochs / 4 : 1; }

/* Trains m by plain gradient descent with batches of `batch` rows for `epochs` epochs. Prints a
 * progress line every epochs/10 epochs when `verbose`. Fills hist if non-NULL. */
static int train(model *m, const data *d, int batch, double lr, int epochs, unsigned long long seed,
                 int verbose, history *hist) {
    tg_tensor *params[] = {m->hid->W, m->hid->b, m->out->W, m->out->b};
    /* Plain gradient descent whose step is halved after each quarter of the epochs: big steps
     * find the circle quickly, small ones then settle on it instead of jittering around it. */
    tg_optim_config cfg = tg_optim_defaults(TG_OPTIM_SGD, lr);
    cfg.decay_factor = 0.5;
    cfg.decay_every = (int64_t)decay_epochs(epochs) * ((N_TRAIN + batch - 1) / batch);
    tg_optim *opt = tg_optim_new(&cfg, params, 4);
    tg_dataset *ds = tg_dataset_new(d->x_train, d->y_train, batch, 1, seed + SHUFFLE_STREAM);
    tg_tape *t = tg_tape_new();
    int rc = -1;
    if (!opt || !ds || !t) {
        fprintf(stderr, "train: %s\n", tg_last_errmsg());
        goto done;
    }
    if (hist) {
        hist->epochs = epochs;
        hist->loss = calloc((size_t)epochs + 1, sizeof(double));
        hist->seconds = calloc((size_t)epochs + 1, sizeof(double));
        hist->test_acc = calloc((size_t)epochs + 1, sizeof(double));
        if (!hist->loss || !hist->seconds || !hist->test_acc)
            goto done;
    }
    double elapsed = 0, loss, acc, test_loss, test_acc;
    for (int epoch = 0; epoch <= epochs; epoch++) {
        if (epoch > 0) {
            double t0 = now_seconds();
            tg_tensor *xb, *yb;
            while (tg_dataset_next(ds, &xb, &yb) == 1) {
                tg_tape_reset(t);
                tg_tensor *l = tg_softmax_cross_entropy(t, model_logits(t, m, xb), yb);
                tg_optim_zero_grad(opt);
                if (tg_backward(t, l) != TG_OK) {
                    fprintf(stderr, "train: %s\n", tg_tape_errmsg(t));
                    goto done;
                }
                tg_status st = tg_optim_step(opt);
                if (st == TG_ERR_NONFINITE) {
                    /* Too large a step blew the weights up: a result, not a crash (the learning-
                     * rate sweep wants to show it). The rest of the curve stays empty (NaN). */
                    if (verbose)
                        printf("epoch %4d  the gradient became NaN/Inf: training diverged (lower "
                               "--lr)\n",
                               epoch);
                    for (int e = epoch; hist && e <= epochs; e++)
                        hist->loss[e] = hist->seconds[e] = hist->test_acc[e] = NAN;
                    rc = 0;
                    goto done;
                }
                if (st != TG_OK) {
                    fprintf(stderr, "train: %s\n", tg_last_errmsg());
                    goto done;
                }
            }
            elapsed += now_seconds() - t0;
        }
        if (evaluate(t, m, d->x_train, d->y_train, &loss, &acc) ||
            evaluate(t, m, d->x_test, d->y_test, &test_loss, &test_acc))
            goto done;
        if (hist) {
            hist->loss[epoch] = loss;
            hist->seconds[epoch] = elapsed;
            hist->test_acc[epoch] = test_acc;
        }
        int every = epochs >= 10 ? epochs / 10 : 1;
        if (verbose && (epoch % every == 0 || epoch == epochs))
            printf("epoch %4d  loss %.4f  train acc %5.1f%%  test acc %5.1f%%\n", epoch, loss,
                   100 * acc, 100 * test_acc);
    }
    rc = 0;
done:
    tg_tape_free(t);
    tg_dataset_free(ds);
    tg_optim_free(opt);
    return rc;
}

/* ---- Pictures: data files and gnuplot scripts in the output folder ---- */

static FILE *open_out(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* P(inside | x) over a GRID x GRID sampling of [-1,1]^2, as x y p lines with a blank line after
 * each row (gnuplot's grid format, for `with image` and contours). */
static int write_grid(const char *dir, const char *name, const model *m, int *crosses) {
    FILE *f = open_out(dir, name);
    tg_tensor *x = tg_tensor_new(TG_F64, 2, (const int64_t[]){GRID * GRID, 2});
    tg_tape *t = tg_tape_new();
    int rc = -1;
    if (!f || !x || !t)
        goto done;
    double *xd = tg_tensor_data(x);
    for (int i = 0; i < GRID; i++)
        for (int j = 0; j < GRID; j++) {
            xd[2 * (i * GRID + j)] = -1 + 2 * (j + 0.5) / GRID;
            xd[2 * (i * GRID + j) + 1] = -1 + 2 * (i + 0.5) / GRID;
        }
    tg_tensor *p = tg_softmax(t, model_logits(t, m, x));
    if (!p) {
        fprintf(stderr, "grid: %s\n", tg_tape_errmsg(t));
        goto done;
    }
    int above = 0, below = 0;
    for (int i = 0; i < GRID; i++) {
        for (int j = 0; j < GRID; j++) {
            int64_t r = i * GRID + j;
            double pin = tg_tensor_get(p, 2 * r + 1);
            above |= pin > 0.5;
            below |= pin < 0.5;
            fprintf(f, "%.5f %.5f %.5f\n", xd[2 * r], xd[2 * r + 1], pin);
        }
        fprintf(f, "\n");
    }
    *crosses = above && below;
    rc = 0;
done:
    if (f)
        fclose(f);
    tg_tape_free(t);
    tg_tensor_free(x);
    return rc;
}

static int write_points(const char *dir, const char *name, const tg_tensor *x, const tg_tensor *y) {
    FILE *f = open_out(dir, name);
    if (!f)
        return -1;
    fprintf(f, "# x1 x2 label(1 = inside)\n");
    for (int64_t i = 0; i < tg_tensor_numel(y); i++)
        fprintf(f, "%.5f %.5f %d\n", tg_tensor_get(x, 2 * i), tg_tensor_get(x, 2 * i + 1),
                (int)tg_tensor_get(y, i));
    fclose(f);
    return 0;
}

static int write_history(const char *dir, const char *name, const history *h) {
    FILE *f = open_out(dir, name);
    if (!f)
        return -1;
    fprintf(f, "# epoch seconds train_loss test_acc\n");
    for (int e = 0; e <= h->epochs; e++)
        fprintf(f, "%d %.6f %.6g %.4f\n", e, h->seconds[e], h->loss[e], h->test_acc[e]);
    fclose(f);
    return 0;
}

/* The common look of every picture. */
static const char *gp_preamble = "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
                                 "  set terminal pngcairo size %d,%d enhanced font 'sans,11'\n"
                                 "} else {\n"
                                 "  set terminal png size %d,%d\n"
                                 "}\n"
                                 "set output '%s'\n";

/* The decision-boundary picture: heat map of P(inside), the p = 0.5 line, the true circle, the
 * train and test points. */
static void gp_boundary(FILE *f, const char *png, const char *grid, int crosses,
                        const char *title) {
    fprintf(f, gp_preamble, 760, 680, 760, 680, png);
    fprintf(f, "set title \"%s\" noenhanced\n", title);
    /* The P = 0.5 line, traced by gnuplot's contouring into a file, when P crosses 0.5 at all. */
    if (crosses)
        fprintf(f,
                "set table '%s.contour'\n"
                "unset surface; set contour base; set cntrparam levels discrete 0.5\n"
                "set view map\n"
                "splot '%s' using 1:2:3 with lines notitle\n"
                "unset table\n"
                "unset contour\n",
                grid, grid);
    char contour[256] = "";
    if (crosses)
        snprintf(contour, sizeof contour,
                 "  '%s.contour' using 1:2 with lines lw 2.5 lc 'black' "
                 "title 'network boundary (P = 0.5)', \\\n",
                 grid);
    fprintf(f,
            "set size ratio -1\n"
            "set xrange [-1:1]; set yrange [-1:1]\n"
            "set xlabel 'x_1'; set ylabel 'x_2'\n"
            "set cblabel 'network output P(inside | x)'\n"
            "set cbrange [0:1]\n"
            /* Pale background so the darker points on top stay visible. */
            "set palette defined (0 '#9ecae1', 0.5 '#ffffff', 1 '#fcae91')\n"
            "set key below horizontal box opaque samplen 2 spacing 1.2 maxrows 3\n"
            "r = sqrt(2/pi)\n"
            "set parametric; set trange [0:2*pi]; set samples 200\n"
            "IN = '#d7191c'; OUT = '#2c7bb6'\n"
            "plot '%s' using 1:2:3 with image notitle, \\\n"
            "%s"
            "  r*cos(t), r*sin(t) with lines lw 2 dt 2 lc rgb '#333333' title 'true circle', \\\n"
            /* One class at a time: 1/0 (undefined) drops the points of the other class. */
            "  'train.dat' using ($3 == 1 ? $1 : 1/0):2 with points pt 7 ps 0.7 lc rgb IN "
            "title 'train, inside', \\\n"
            "  'train.dat' using ($3 == 0 ? $1 : 1/0):2 with points pt 7 ps 0.7 lc rgb OUT "
            "title 'train, outside', \\\n"
            "  'test.dat'  using ($3 == 1 ? $1 : 1/0):2 with points pt 9 ps 0.9 lc rgb IN "
            "title 'test, inside', \\\n"
            "  'test.dat'  using ($3 == 0 ? $1 : 1/0):2 with points pt 9 ps 0.9 lc rgb OUT "
            "title 'test, outside', \\\n"
            /* Black outlines keep the points visible on the background of their own colour. */
            "  'train.dat' using 1:2 with points pt 6 ps 0.7 lw 0.6 lc 'black' notitle, \\\n"
            "  'test.dat'  using 1:2 with points pt 8 ps 0.9 lw 0.6 lc 'black' notitle\n"
            "unset parametric\n",
            grid, contour);
}

static const char *picture_names[4] = {"1_decision_boundary.png", "2_gd_variants.png",
                                       "3_learning_rates.png", "4_without_tanh.png"};

/* One curve per history file: loss against column `xcol` (1 = epoch, 2 = seconds). */
static void gp_curves(FILE *f, int xcol, const char *const files[3], const char *const titles[3]) {
    static const char *colors[3] = {"#1b9e77", "#d95f02", "#7570b3"};
    fprintf(f, "plot ");
    for (int i = 0; i < 3; i++)
        fprintf(f, "%s'%s' using %d:3 with lines lw 2 lc rgb '%s' title \"%s\"",
                i ? ", \\\n  " : "", files[i], xcol, colors[i], titles[i]);
    /* The loss of answering 50/50 everywhere: the starting point, and where a stuck run stays. */
    fprintf(f, ", \\\n  log(2) with lines dt 3 lw 1.5 lc 'gray40' "
               "title 'ln 2 = loss of always answering 50/50'\n");
}

/* plots.gp: all four pictures, from the data files in the same folder. */
static int write_scripts(const options *o, const int crosses[2], double test_acc, double lin_acc,
                         const int gd_batch[3], const double gd_lr[3], const double lr_factor[3]) {
    FILE *f = open_out(o->out, "plots.gp");
    if (!f)
        return -1;
    char title[256];
    fprintf(f, "# Written by circles; run `gnuplot plots.gp` in this folder to redraw.\n");
    snprintf(title, sizeof title, "2-%d-2 tanh network: test accuracy %.1f%%", o->hidden,
             100 * test_acc);
    gp_boundary(f, picture_names[0], "boundary.dat", crosses[0], title);
    snprintf(title, sizeof title,
             "The same network without tanh is a linear model: test accuracy %.1f%%\\n"
             "(a straight line cannot separate inside from outside; guessing gives about 50%%)",
             100 * lin_acc);
    gp_boundary(f, picture_names[3], "linear.dat", crosses[1], title);

    const char *gd_files[3] = {"gd_full.dat", "gd_stochastic.dat", "gd_mini.dat"};
    char gd_t[3][64];
    const char *gd_titles[3] = {gd_t[0], gd_t[1], gd_t[2]};
    snprintf(gd_t[0], sizeof gd_t[0], "full batch: %d points per step, lr %g", gd_batch[0],
             gd_lr[0]);
    snprintf(gd_t[1], sizeof gd_t[1], "stochastic: 1 point per step, lr %g", gd_lr[1]);
    snprintf(gd_t[2], sizeof gd_t[2], "mini-batch: %d points per step, lr %g", gd_batch[2],
             gd_lr[2]);
    fprintf(f, "reset\n");
    fprintf(f, gp_preamble, 1300, 560, 1300, 560, picture_names[1]);
    fprintf(f,
            "set multiplot layout 1,2 title \"Full-batch, stochastic and mini-batch gradient "
            "descent\\n(the same network, data and initial weights; each learning rate halved "
            "every %d epochs)\" font ',13'\n"
            "set logscale y; set grid\n"
            "set ylabel 'training loss (cross-entropy, log scale)'\n"
            "set key bottom left box opaque\n"
            "set xlabel 'epoch (one pass over the %d training points)'\n"
            "set title 'against epochs'\n",
            decay_epochs(o->epochs), N_TRAIN);
    gp_curves(f, 1, gd_files, gd_titles);
    fprintf(f, "set xlabel 'training time (seconds, evaluation not counted)'\n"
               "set title 'against wall-clock time'\n");
    gp_curves(f, 2, gd_files, gd_titles);
    fprintf(f, "unset multiplot\n");

    const char *lr_files[3] = {"lr_small.dat", "lr_good.dat", "lr_large.dat"};
    static const char *lr_words[3] = {"too small", "good", "too large"};
    char lr_t[3][64];
    const char *lr_titles[3] = {lr_t[0], lr_t[1], lr_t[2]};
    /* "too small / good / too large" holds for the default lr; for another, say what was run. */
    static const char *lr_rel[3] = {"your --lr / 100", "your --lr", "your --lr x 30"};
    for (int i = 0; i < 3; i++)
        snprintf(lr_t[i], sizeof lr_t[i], "lr = %g (%s)", o->lr * lr_factor[i],
                 o->lr == defaults.lr ? lr_words[i] : lr_rel[i]);
    fprintf(f, "reset\n");
    fprintf(f, gp_preamble, 900, 600, 900, 600, picture_names[2]);
    fprintf(f,
            "set title \"Learning-rate sweep (mini-batch of %d; lr halved every %d epochs)\"\n"
            "set logscale y; set grid\n"
            "set xlabel 'epoch'\n"
            "set ylabel 'training loss (cross-entropy, log scale)'\n"
            "set key bottom left box opaque\n",
            o->batch, decay_epochs(o->epochs));
    gp_curves(f, 1, lr_files, lr_titles);
    fclose(f);
    return 0;
}

/* Runs `gnuplot script` inside dir. Returns gnuplot's exit status. */
static int run_gnuplot(const char *dir, const char *script) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && gnuplot '%s'", dir, script);
    return system(cmd);
}

int main(int argc, char **argv) {
    options o;
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa > 0 ? 0 : 2;

    /* The data: one seeded rng draws the train set, then the test set. */
    data d = {0};
    tg_rng rng;
    tg_rng_seed(&rng, o.seed);
    if (tg_circles_make(TG_F64, N_TRAIN, &rng, &d.x_train, &d.y_train) != TG_OK ||
        tg_circles_make(TG_F64, N_TEST, &rng, &d.x_test, &d.y_test) != TG_OK) {
        fprintf(stderr, "data: %s\n", tg_last_errmsg());
        return 1;
    }
    int status = 1;
    model net = {0}, lin = {0};
    history hist_main = {0}, hist_gd[3] = {{0}}, hist_lr[3] = {{0}}, hist_lin = {0};

    printf("circles: 2-%d-2 tanh network, %d train / %d test points, lr %g, batch %d, "
           "%d epochs, seed %llu\n",
           o.hidden, N_TRAIN, N_TEST, o.lr, o.batch, o.epochs, o.seed);
    double t0 = now_seconds();
    if (model_init(&net, o.hidden, 1, o.seed) ||
        train(&net, &d, o.batch, o.lr, o.epochs, o.seed, 1, &hist_main))
        goto done;
    double loss, test_loss, train_acc, test_acc;
    tg_tape *t = tg_tape_new();
    int ev = !t || evaluate(t, &net, d.x_train, d.y_train, &loss, &train_acc) ||
             evaluate(t, &net, d.x_test, d.y_test, &test_loss, &test_acc);
    tg_tape_free(t);
    if (ev)
        goto done;
    printf("trained in %.2f s: train accuracy %.1f%%, test accuracy %.1f%%\n", now_seconds() - t0,
           100 * train_acc, 100 * test_acc);

    /* The experiments behind the pictures: each trains a fresh network from the same seed. */
    const int gd_batch[3] = {N_TRAIN, 1, o.batch};
    const char *gd_name[3] = {"full-batch", "stochastic", "mini-batch"};
    /* A step that suits each batch size: one noisy point per step needs a smaller step than the
     * mean over 20 points, and the exact full-batch gradient tolerates a larger one. */
    const double gd_lr[3] = {2 * o.lr, o.lr / 20, o.lr};
    for (int i = 0; i < 3; i++) {
        model m = {0};
        int rc = model_init(&m, o.hidden, 1, o.seed) ||
                 train(&m, &d, gd_batch[i], gd_lr[i], o.epochs, o.seed, 0, &hist_gd[i]);
        model_free(&m);
        if (rc)
            goto done;
        printf("%-10s GD (batch %4d, lr %-5g): final loss %.4f, test accuracy %.1f%%, %.3f s\n",
               gd_name[i], gd_batch[i], gd_lr[i], hist_gd[i].loss[o.epochs],
               100 * hist_gd[i].test_acc[o.epochs], hist_gd[i].seconds[o.epochs]);
    }
    const double lr_factor[3] = {1.0 / 100, 1, 30};
    const char *lr_name[3] = {"too small", "good", "too large"};
    const char *lr_rel_name[3] = {"--lr / 100", "--lr", "--lr x 30"};
    for (int i = 0; i < 3; i++) {
        model m = {0};
        int rc = model_init(&m, o.hidden, 1, o.seed) ||
                 train(&m, &d, o.batch, o.lr * lr_factor[i], o.epochs, o.seed, 0, &hist_lr[i]);
        model_free(&m);
        if (rc)
            goto done;
        printf("lr %-8g (%s): final loss %.4f, test accuracy %.1f%%\n", o.lr * lr_factor[i],
               o.lr == defaults.lr ? lr_name[i] : lr_rel_name[i], hist_lr[i].loss[o.epochs],
               100 * hist_lr[i].test_acc[o.epochs]);
    }
    if (model_init(&lin, o.hidden, 0, o.seed) ||
        train(&lin, &d, o.batch, o.lr, o.epochs, o.seed, 0, &hist_lin))
        goto done;
    printf("without tanh (a linear model): final loss %.4f, test accuracy %.1f%%\n",
           hist_lin.loss[o.epochs], 100 * hist_lin.test_acc[o.epochs]);

    /* Data files and gnuplot scripts go to the output folder; the scripts can be re-run there. */
    int crosses[2] = {0, 0}; /* does P(inside) cross 0.5 on the plane (is there a boundary)? */
    if (mkdir(o.out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create the folder %s: %s\n", o.out, strerror(errno));
        goto done;
    }
    if (write_points(o.out, "train.dat", d.x_train, d.y_train) ||
        write_points(o.out, "test.dat", d.x_test, d.y_test) ||
        write_grid(o.out, "boundary.dat", &net, &crosses[0]) ||
        write_grid(o.out, "linear.dat", &lin, &crosses[1]) ||
        write_history(o.out, "gd_full.dat", &hist_gd[0]) ||
        write_history(o.out, "gd_stochastic.dat", &hist_gd[1]) ||
        write_history(o.out, "gd_mini.dat", &hist_gd[2]) ||
        write_history(o.out, "lr_small.dat", &hist_lr[0]) ||
        write_history(o.out, "lr_good.dat", &hist_lr[1]) ||
        write_history(o.out, "lr_large.dat", &hist_lr[2]))
        goto done;
    if (write_scripts(&o, crosses, test_acc, hist_lin.test_acc[o.epochs], gd_batch, gd_lr,
                      lr_factor))
        goto done;
    if (system("gnuplot --version > /dev/null 2>&1") != 0) {
        printf("\ngnuplot was not found, so no pictures were drawn. Install it with\n"
               "    sudo apt-get install gnuplot-nox\n"
               "then run this program again (or `gnuplot plots.gp` inside %s).\n",
               o.out);
        status = 0;
        goto done;
    }
    if (run_gnuplot(o.out, "plots.gp") != 0) {
        fprintf(stderr, "gnuplot failed on %s/plots.gp (see its messages above)\n", o.out);
        goto done;
    }
    printf("\npictures written to %s/:\n", o.out);
    for (int i = 0; i < 4; i++)
        printf("  %s/%s\n", o.out, picture_names[i]);
    status = 0;
done:
    history_free(&hist_main);
    history_free(&hist_lin);
    for (int i = 0; i < 3; i++) {
        history_free(&hist_gd[i]);
        history_free(&hist_lr[i]);
    }
    model_free(&net);
    model_free(&lin);
    tg_tensor_free(d.x_train);
    tg_tensor_free(d.y_train);
    tg_tensor_free(d.x_test);
    tg_tensor_free(d.y_test);
    return status;
}

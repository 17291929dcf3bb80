"""The four ideas of docs/TUTORIAL.md section 6.1, as a researcher edits ddpg.py: python benchmarks/ideas.py NAME FILE
(benchmarks/try_ideas.sh applies each to a scratch worktree of HEAD and checks it)."""
import sys
from pathlib import Path

IDEAS = {}

IDEAS["huber"] = [
('''    weights_init: Literal["torch", "xavier", "uniform"]''',
 '''    critic_loss: Literal["mse", "huber"] = "mse"  # the critic's regression loss on the TD error
    weights_init: Literal["torch", "xavier", "uniform"]'''),
('''        td_error2 = (q - y).pow(2)''',
 '''        td_error2 = (q - y).pow(2) if a.critic_loss == "mse" else F.huber_loss(q, y.expand_as(q), reduction="none")'''),
]

IDEAS["nstep"] = [
('''    weights_init: Literal["torch", "xavier", "uniform"]''',
 '''    n_step: PosInt = 1  # n-step returns: sum_k<n gamma^k r_t+k + gamma^n Q'(s_t+n, a'), cut at an episode's end
    weights_init: Literal["torch", "xavier", "uniform"]'''),
('''Batch = namedtuple("Batch", "obs act rew terminated next_obs")''',
 '''Batch = namedtuple("Batch", "obs act rew terminated next_obs discount", defaults=(None,))  # None: gamma'''),
('''    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device = capacity, device''',
 '''    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, gamma=0.99, n_step=1):
        self.capacity, self.device, self.gamma, self.n_step = capacity, device, gamma, n_step'''),
('''        next_idx, _ = self.successor(idx)
        return Batch(obs=self.obs[idx], act=self.actions[idx], rew=self.rewards[idx], terminated=self.terminated[idx],
                     next_obs=self.obs[next_idx])''',
 '''        rew, term, last = self.rewards[idx].clone(), self.terminated[idx].clone(), idx
        if self.n_step == 1:
            next_idx, _ = self.successor(idx)
            return Batch(obs=self.obs[idx], act=self.actions[idx], rew=rew, terminated=term, next_obs=self.obs[next_idx])
        discount = torch.full_like(rew, self.gamma)
        for _ in range(self.n_step - 1):  # R = sum_k gamma^k r_t+k until a termination, the episode's end or n
            nxt, goes_on = self.successor(last)
            goes_on &= term == 0
            rew = torch.where(goes_on, rew + discount * self.rewards[nxt], rew)
            term = torch.where(goes_on, self.terminated[nxt], term)
            last, discount = torch.where(goes_on, nxt, last), torch.where(goes_on, discount * self.gamma, discount)
        next_idx, _ = self.successor(last)
        return Batch(obs=self.obs[idx], act=self.actions[idx], rew=rew, terminated=term, next_obs=self.obs[next_idx],
                     discount=discount)'''),
('''            y = bellman_target(b.rew, b.terminated, next_q, a.gamma)''',
 '''            discount = a.gamma if b.discount is None else b.discount  # gamma^n for an n-step return
            y = bellman_target(b.rew, b.terminated, next_q, discount)'''),
('''    buffer = ReplayBuffer(args.buffer_size, obs_dim, space.shape[0], device)''',
 '''    buffer = ReplayBuffer(args.buffer_size, obs_dim, space.shape[0], device, args.gamma, args.n_step)'''),
]

IDEAS["pink"] = [
('''def half_range(space: gym.spaces.Box) -> np.ndarray:''',
 '''class PinkNoise(Noise):
    """Pink noise (Eberhard et al. 2023): eps with a 1/f^beta spectrum, one sequence per episode of its length."""

    def __init__(self, scale: np.ndarray, sigma: float, ep_len: int | None, beta: float = 1.0):
        super().__init__(scale)
        self.sigma, self.ep_len, self.beta = sigma, ep_len or 1000, beta
        self.seq, self.t = np.zeros((self.ep_len, len(scale))), 0

    def reset(self, actor: Actor, rng: np.random.Generator) -> None:  # a new sequence: random phases, 1/f power
        f = np.fft.rfftfreq(self.ep_len)
        f[0] = f[1]
        spectrum = rng.standard_normal((len(f), len(self.scale), 2)) @ np.array([1, 1j]) * f[:, None] ** (-self.beta / 2)
        x = np.fft.irfft(spectrum, n=self.ep_len, axis=0)
        self.seq, self.t = self.sigma * x / x.std(0), 0

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        self.t += 1
        return self.seq[(self.t - 1) % self.ep_len]

    def state_dict(self) -> dict: return {"seq": self.seq.copy(), "t": self.t}
    def load_state_dict(self, state: dict) -> None: self.seq, self.t = state["seq"].copy(), state["t"]


def half_range(space: gym.spaces.Box) -> np.ndarray:'''),
('''    "ou": lambda args, actor, space, ep_len:''',
 '''    "pink": lambda args, actor, space, ep_len: PinkNoise(half_range(space), args.noise_std, ep_len),
    "ou": lambda args, actor, space, ep_len:'''),
]

IDEAS["per"] = [
('''    weights_init: Literal["torch", "xavier", "uniform"]''',
 '''    per_alpha: NonNegFloat = 0.0  # prioritized replay: P(i) ~ p_i^alpha, p_i = |TD error| + 1e-6 (0: uniform)
    per_beta: NonNegFloat = 0.4  # prioritized replay: importance weights (1 / (N P(i)))^beta, max-normalized
    weights_init: Literal["torch", "xavier", "uniform"]'''),
('''Batch = namedtuple("Batch", "obs act rew terminated next_obs")''',
 '''Batch = namedtuple("Batch", "obs act rew terminated next_obs weights idx", defaults=(1.0, None))'''),
('''    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.device = capacity, device''',
 '''    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device, alpha=0.0, beta=0.4):
        self.capacity, self.device, self.alpha, self.beta = capacity, device, alpha, beta
        self.priorities = torch.zeros(capacity, device=device)  # p_i: new transitions get the largest so far'''),
('''        self.valid[i] = True
''', '''        self.valid[i] = True
        self.priorities[i] = self.priorities[: self.high].max() if self.added else 1.0
'''),
('''        idx = torch.randint(self.high, (batch_size,), device=self.device)''',
 '''        if self.alpha > 0:  # P(i) ~ p_i^alpha over the slots that start a transition
            p = self.priorities[: self.high] ** self.alpha * self.valid[: self.high]
            idx = torch.multinomial(p, batch_size, replacement=True)
            w = (p.sum() / (self.valid[: self.high].sum() * p[idx])) ** self.beta
            return self.batch(idx, w / w.max())
        idx = torch.randint(self.high, (batch_size,), device=self.device)'''),
('''        next_idx, _ = self.successor(idx)
        return Batch(obs=self.obs[idx], act=self.actions[idx], rew=self.rewards[idx], terminated=self.terminated[idx],
                     next_obs=self.obs[next_idx])''',
 '''        return self.batch(idx, torch.ones(batch_size, device=self.device))

    def batch(self, idx: torch.Tensor, weights: torch.Tensor) -> Batch:
        next_idx, _ = self.successor(idx)
        return Batch(obs=self.obs[idx], act=self.actions[idx], rew=self.rewards[idx], terminated=self.terminated[idx],
                     next_obs=self.obs[next_idx], weights=weights, idx=idx)

    def update_priorities(self, idx: torch.Tensor, td_error: torch.Tensor) -> None:
        self.priorities[idx] = td_error.detach().abs() + 1e-6'''),
('''        td_error2 = (q - y).pow(2)''', '''        td_error2 = (q - y).pow(2) * b.weights  # importance weights (1 under uniform replay)
        self.td_error = (q - y).detach().mean(0)  # priorities: the TD error, mean over the critics'''),
('''        return Metrics(q_loss.detach(), q.detach().mean(), self.last_actor_loss)''',
 '''        return Metrics(q_loss.detach(), q.detach().mean(), self.last_actor_loss, self.td_error)'''),
('''Metrics = namedtuple("Metrics", "q_loss q_mean actor_loss")''', '''Metrics = namedtuple("Metrics", "q_loss q_mean actor_loss td_error")'''),
('''    buffer = ReplayBuffer(args.buffer_size, obs_dim, space.shape[0], device)''',
 '''    buffer = ReplayBuffer(args.buffer_size, obs_dim, space.shape[0], device, args.per_alpha, args.per_beta)'''),
('''                metrics = learner.update(buffer.sample(args.batch_size))''',
 '''                batch = buffer.sample(args.batch_size)
                metrics = learner.update(batch)
                buffer.update_priorities(batch.idx, metrics.td_error)  # p_i = |delta_i| on the sampled slots'''),
]

if __name__ == "__main__":
    name, path = sys.argv[1], Path(sys.argv[2])
    s = path.read_text()
    for old, new in IDEAS[name]:
        assert s.count(old) == 1, (name, old[:80], s.count(old))
        s = s.replace(old, new)
    path.write_text(s)

(* Small facts about natural numbers, on top of the installed MathComp. *)
From mathcomp Require Import all_ssreflect.

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

(* twice n == n doubled, as a sum. *)
Definition twice n := n + n.

Lemma twiceE n : twice n = n.*2.
Proof. by rewrite /twice addnn. Qed.

Lemma twice_add m n : twice (m + n) = twice m + twice n.
Proof. by rewrite !twiceE doubleD. Qed.

Lemma twice_mul2 n : twice n = 2 * n.
Proof. by rewrite twiceE mul2n. Qed.

Lemma odd_twice n : odd (twice n) = false.
Proof. by rewrite twiceE odd_double. Qed.

Lemma twice_leq m n : m <= n -> twice m <= twice n.
Proof. by move=> le_mn; rewrite !twiceE leq_double. Qed.

Lemma add_sub_cancel m n : m + n - n = m.
Proof. have h : m + n - n = m by rewrite addnK. by []. Qed.

Lemma sub_add_le m n : n <= m -> m - n + n = m.
Proof. by move=> le_nm; rewrite subnK. Qed.

Lemma mul_sum_distr m n p : (m + n) * p = m * p + n * p.
Proof. by rewrite mulnDl. Qed.

Lemma sq_sum m n : (m + n) ^ 2 = m ^ 2 + n ^ 2 + 2 * (m * n).
Proof.
have e : (m + n) ^ 2 = (m + n) * (m + n) by rewrite expnS expn1.
by rewrite sqrnD.
Qed.

Lemma leq_add_both m1 m2 n1 n2 : m1 <= n1 -> m2 <= n2 -> m1 + m2 <= n1 + n2.
Proof. by move=> h1 h2; apply: leq_add. Qed.

Lemma max_comm m n : maxn m n = maxn n m.
Proof. by rewrite maxnC. Qed.

Lemma min_le_max m n : minn m n <= maxn m n.
Proof.
have h1 : minn m n <= m by rewrite geq_minl.
have h2 : m <= maxn m n by rewrite leq_maxl.
exact: leq_trans h1 h2.
Qed.

(* Small facts about natural numbers, on top of the installed MathComp. *)
From mathcomp Require Import all_ssreflect.

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

(* twice n == n doubled, as a sum. *)
Definition twice n := n + n.

Lemma twiceE n : twice n = n.*2.
Proof.
rewrite /twice.
by rewrite addnn.
Qed.

Lemma twice_add m n : twice (m + n) = twice m + twice n.
Proof.
rewrite !twiceE.
by rewrite doubleD.
Qed.

Lemma twice_mul2 n : twice n = 2 * n.
Proof.
rewrite twiceE.
by rewrite mul2n.
Qed.

Lemma odd_twice n : odd (twice n) = false.
Proof.
rewrite twiceE.
by rewrite odd_double.
Qed.

Lemma twice_leq m n : m <= n -> twice m <= twice n.
Proof.
move=> le_mn.
by rewrite !twiceE leq_double.
Qed.

Lemma add_sub_cancel m n : m + n - n = m.
Proof. have h : m + n - n = m by rewrite addnK. by []. Qed.

Lemma sub_add_le m n : n <= m -> m - n + n = m.
Proof.
move=> le_nm.
by rewrite subnK.
Qed.

Lemma mul_sum_distr m n p : (m + n) * p = m * p + n * p.
Proof.
rewrite mulnDl.
done.
Qed.

Lemma sq_sum m n : (m + n) ^ 2 = m ^ 2 + n ^ 2 + 2 * (m * n).
Proof.
have e : (m + n) ^ 2 = (m + n) * (m + n) by rewrite expnS expn1.
by rewrite sqrnD.
Qed.

Lemma leq_add_both m1 m2 n1 n2 : m1 <= n1 -> m2 <= n2 -> m1 + m2 <= n1 + n2.
Proof.
move=> h1 h2.
by apply: leq_add.
Qed.

Lemma max_comm m n : maxn m n = maxn n m.
Proof.
rewrite maxnC.
done.
Qed.

Lemma min_le_max m n : minn m n <= maxn m n.
Proof.
have h1 : minn m n <= m by rewrite geq_minl.
have h2 : m <= maxn m n by rewrite leq_maxl.
exact: leq_trans h1 h2.
Qed.

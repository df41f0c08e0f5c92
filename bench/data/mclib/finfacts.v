(* Facts about finite types and sets, on top of the installed MathComp. *)
From mathcomp Require Import all_ssreflect.

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

Section Fin.
Variable T : finType.

Lemma card_le_total (A : {set T}) : #|A| <= #|T|.
Proof.
rewrite max_card.
done.
Qed.

Lemma setU_comm (A B : {set T}) : A :|: B = B :|: A.
Proof.
rewrite setUC.
done.
Qed.

Lemma setI_sub_left (A B : {set T}) : A :&: B \subset A.
Proof.
rewrite subsetIl.
done.
Qed.

Lemma in_setU_or (A B : {set T}) x : (x \in A :|: B) = (x \in A) || (x \in B).
Proof.
rewrite in_setU.
done.
Qed.

Lemma card_setU_le (A B : {set T}) : #|A :|: B| <= #|A| + #|B|.
Proof.
have e := cardsUI A B.
by rewrite -e leq_addr.
Qed.

Lemma subset_trans3 (A B C : {set T}) : A \subset B -> B \subset C -> A \subset C.
Proof.
move=> h1 h2.
by apply: subset_trans h1 h2.
Qed.

Lemma setC_involutive (A : {set T}) : ~: ~: A = A.
Proof.
rewrite setCK.
done.
Qed.

End Fin.

Lemma ord_lt n (i : 'I_n) : (i : nat) < n.
Proof. exact: ltn_ord. Qed.
